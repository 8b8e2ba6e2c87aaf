"""The default CPU thread count: the cores that are idle right now, measured, not guessed.

On a small machine a second busy process turns every extra torch thread into a straggler: each parallel
region waits for the thread that shares its core with the other job (benchmarks/threads.py measured a
2-thread training step 1.4x slower than 1 thread on a 2-core machine with one core taken; with OpenMP's
default spin-waiting it was 20-40x). So unless the user chose (``--threads``, ``OMP_NUM_THREADS``), dlkit samples
the CPU's idle time for a moment at start-up and uses that many threads (at least 1).
"""

from __future__ import annotations

import os
import time
from typing import Mapping

# OpenMP's wait between parallel regions, set before torch loads its OpenMP runtime (dlkit/cli.py). torch's
# Linux wheels ship GNU libgomp: after a region its threads spin GOMP_SPINCOUNT times, then sleep. Measured on a
# 2-core machine (benchmarks/omp_policy.py, table in benchmarks/RESULTS.md), a GPT training step (nanoGPT's CPU
# config, 2 threads) took, idle: PASSIVE (no spin) 78 ms, 1,000 spins 63 ms, 10,000 55 ms, ACTIVE 41 ms; beside a
# second torch training: PASSIVE 84 ms, 1,000 spins 98 ms, 10,000 256 ms, libgomp's default (300,000) and ACTIVE
# 2.4 s. No setting keeps both; 1,000 spins takes a good part of the idle gain and never costs much under load.
# KMP_BLOCKTIME (ms) is the same knob for Intel's libiomp (other builds of torch).
SPIN_COUNT = "1000"
BLOCKTIME_MS = "1"
WAIT_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat, or None where there is no /proc."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])


def idle_cores(window: float = 0.05) -> float | None:
    """How many cores were idle during ``window`` seconds (None where it cannot be measured)."""
    a = _cpu_times()
    if a is None:
        return None
    time.sleep(window)
    b = _cpu_times()
    total = b[1] - a[1]
    if total <= 0:
        return None
    return (b[0] - a[0]) / total * (os.cpu_count() or 1)


def default_threads() -> int:
    """Idle cores (rounded, within the cores this process may use), or all of them if unmeasurable."""
    n = available_cores()
    if n <= 1:
        return 1
    idle = idle_cores()
    if idle is None:
        return n
    return max(1, min(n, int(idle + 0.5)))


def choose_threads(requested: int | None, warn=None) -> int | None:
    """The thread count to set: the user's ``--threads`` (capped at the cores this process may use: 100000
    threads made torch's thread pool crash), else none when OMP_NUM_THREADS is set, else measured."""
    if requested:
        n, cores = int(requested), available_cores()
        if n > cores:
            if warn is not None:
                warn(f"--threads {n:,} is more than the {cores} cores here; using {cores}")
            return cores
        return n
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return default_threads()


def openmp_wait_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The OpenMP wait settings to add to ``environ`` before torch loads: none when the user chose any of
    OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME (theirs win), else a bounded spin."""
    if any(environ.get(k) for k in WAIT_KEYS):
        return {}
    return {"GOMP_SPINCOUNT": SPIN_COUNT, "KMP_BLOCKTIME": BLOCKTIME_MS}
