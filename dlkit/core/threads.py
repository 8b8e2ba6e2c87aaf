"""The default CPU thread count: the cores that are idle right now, measured, not guessed.

On a small machine a second busy process turns every extra torch thread into a straggler: each parallel
region waits for the thread that shares its core with the other job (benchmarks/threads.py measured a
2-thread training step 1.4x slower than 1 thread on a 2-core machine with one core taken; with OpenMP's
default spin-waiting it was 20-40x). So unless the user chose (``--threads``, ``OMP_NUM_THREADS``), dlkit measures
how many cores other processes leave free while torch loads (no extra wait at start-up) and uses that many threads
(at least 1).
"""

from __future__ import annotations

import os
import sys
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


def _sample() -> tuple[tuple[int, int] | None, float, float]:
    """(CPU jiffies, wall clock, this process's CPU seconds) now."""
    t = os.times()
    return _cpu_times(), time.monotonic(), t.user + t.system


# The probe's window opens when dlkit first imports this module (dlkit/cli.py does, before torch): the default
# thread count is then read over the seconds torch takes to load, with no sleep of its own on the way to work.
_OPENED = _sample()
WINDOW_S = (0.2, 10.0)  # an opened window is used when this old (shorter: too few jiffies; longer: stale)


def free_cores(window: float = 0.05, since=None) -> float | None:
    """How many cores other processes leave free (None where unmeasurable), averaged since ``since`` (a
    :func:`_sample`), else since this module's import when that was 0.2-10 s ago, else over ``window`` seconds
    from now. This process's own CPU time does not count as taken: it is the work the threads are for."""
    if since is None and _OPENED[0] is not None and WINDOW_S[0] <= time.monotonic() - _OPENED[1] <= WINDOW_S[1]:
        since = _OPENED
    if since is None:
        since = _sample()
        time.sleep(window)
    (jiffies0, wall0, own0), (jiffies1, wall1, own1) = since, _sample()
    if jiffies0 is None or jiffies1 is None or jiffies1[1] <= jiffies0[1] or wall1 <= wall0:
        return None
    cores = os.cpu_count() or 1
    busy = (1 - (jiffies1[0] - jiffies0[0]) / (jiffies1[1] - jiffies0[1])) * cores  # this process's work included
    mine = (own1 - own0) / (wall1 - wall0)
    return cores - max(0.0, busy - mine)


def default_threads() -> int:
    """The cores other processes leave free (rounded, within the cores this process may use), or all of them
    if unmeasurable."""
    n = available_cores()
    if n <= 1:
        return 1
    free = free_cores()
    if free is None:
        return n
    return max(1, min(n, int(free + 0.5)))


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


# A training loop that watches the machine (BusyWatch) can spin longer: on the idle machine a GPT step (nanoGPT's
# CPU config, 2 threads, in-process, load 0.6-1.3) took 36 ms with 3,000,000 spins (~30 ms; as fast as ACTIVE),
# 42-44 ms with libgomp's default 300,000 and 50 ms with the 1,000 above. What makes long spins dangerous, a
# second job arriving later, is then undone within a step or two by dropping to one thread (no team, no spin).
IDLE_SPIN_COUNT = "3000000"


def spin_when_idle(environ: Mapping[str, str], threads: int | None = None) -> dict[str, str]:
    """The wait setting for a training loop that runs :class:`BusyWatch`, to add before torch loads: the long
    spin when dlkit's own default is in place (not the user's), torch is not loaded yet, this is a single
    process (no torchrun ranks sharing the cores), more than one thread may run and every core is free now;
    else nothing."""
    ours = environ.get("GOMP_SPINCOUNT") == SPIN_COUNT and environ.get("KMP_BLOCKTIME") == BLOCKTIME_MS \
        and not environ.get("OMP_WAIT_POLICY")
    single = int(environ.get("WORLD_SIZE") or 1) <= 1
    if not ours or not single or threads == 1 or available_cores() <= 1 or environ.get("OMP_NUM_THREADS") == "1" \
            or "torch" in sys.modules:  # too late: OpenMP read its settings when torch loaded
        return {}
    free = free_cores()
    if free is None or free < available_cores() - 0.5:
        return {}
    return {"GOMP_SPINCOUNT": IDLE_SPIN_COUNT}


class BusyWatch:
    """Called once per training step: every ``period`` seconds it measures the cores other processes take and
    sets torch's threads to what they leave free (at least 1, at most the starting count), so that threads
    that spin long never wait for a straggler sharing its core with another job (20-40x slower steps, see
    above). Thread counts change float reduction order, so a run that met another job is not bit-for-bit the
    run it would have been alone."""

    def __init__(self, threads: int, set_threads, note=None, period: float = 2.0):
        self.most, self.current, self.set_threads, self.note, self.period = threads, threads, set_threads, note, period
        self.since = _sample()

    def __call__(self) -> None:
        if time.monotonic() - self.since[1] < self.period:
            return
        free, self.since = free_cores(since=self.since), _sample()
        want = self.most if free is None else max(1, min(self.most, int(free + 0.5)))
        if want != self.current:
            self.set_threads(want)
            if self.note is not None:
                self.note(f"{'other processes took' if want < self.current else 'cores came free'}: "
                          f"{want} thread{'s' if want > 1 else ''} now")
            self.current = want


def busy_watch(note=None, environ: Mapping[str, str] = os.environ):
    """A :class:`BusyWatch` over torch's threads when this process spins long (:func:`spin_when_idle`), else a
    no-op: with dlkit's short default spin a busy machine costs little and the thread count stays put."""
    if environ.get("GOMP_SPINCOUNT") != IDLE_SPIN_COUNT:
        return lambda: None
    import torch

    return BusyWatch(torch.get_num_threads(), torch.set_num_threads, note)
