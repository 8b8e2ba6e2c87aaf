"""How many CPU threads should dlkit use? lm-train, translate and superres with 1 and 2 threads, idle and busy.

  python benchmarks/threads.py [--data ../shared/data] [--repeats 3]

Each cell runs the workload in a fresh process with ``OMP_NUM_THREADS`` (and torch's thread count) set and
OpenMP's wait policy ACTIVE (idle threads spin), PASSIVE (they sleep) or dlkit's default (a bounded spin, see
dlkit/core/threads.py). "busy"
means one other process keeps one core fully loaded (a single-threaded matmul loop) during the measurement.
Prints a Markdown table of seconds (median of --repeats) for benchmarks/RESULTS.md, with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = [  # (label, threads, OMP_WAIT_POLICY)
    ("1 thread", 1, "PASSIVE"),
    ("2 threads, ACTIVE wait (spin)", 2, "ACTIVE"),
    ("2 threads, PASSIVE wait", 2, "PASSIVE"),
    ("dlkit's default (idle cores, bounded spin)", None, None),
]
BUSY = "import torch\ntorch.set_num_threads(1)\na = torch.randn(384, 384)\nwhile True:\n    a = (a @ a).tanh()\n"


def child(work: str, data: str, tmp: str) -> None:
    """Run one workload in this process and print its wall time (start-up excluded)."""
    import contextlib
    import io

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if work == "lm":
        from lm_bench import _dlkit_seconds
        from dlkit.tasks.lm.data import make_text

        text = Path(tmp) / "text.txt"
        text.write_text(make_text(200_000))
        print(_dlkit_seconds(text, tmp + "/run", 30))
        return
    from dlkit.cli import main

    if work == "translate":
        import gzip

        lines = gzip.open(Path(data) / "multi30k" / "test_2016_flickr.en.gz", "rt").read().splitlines()[:200]
        src = Path(tmp) / "src.en"
        src.write_text("\n".join(lines) + "\n")
        argv = ["translate", "--model", "multi30k-en-fr", "--quiet"]
        stdin = open(src)
    else:  # superres: x4 of a 192x192 crop of the bundled sample image
        from PIL import Image

        img = Path(tmp) / "in.png"
        Image.open(Path(__file__).resolve().parent.parent / "sample_data/superres/astronaut_hr.png").convert("RGB") \
            .crop((0, 0, 192, 192)).save(img)
        argv = ["superres", str(img), "-o", str(Path(tmp) / "out.png"), "--model", "srresnet-x4", "--quiet"]
        stdin = sys.stdin
    t = time.perf_counter()
    old_stdin, sys.stdin = sys.stdin, stdin
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            main(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    finally:
        sys.stdin = old_stdin
    print(time.perf_counter() - t)


def measure(work: str, threads: int | None, wait: str, data: str) -> float:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(k, None)
        if threads:
            env[k] = str(threads)
    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        env.pop(k, None)
    if wait:
        env["OMP_WAIT_POLICY"] = wait  # set explicitly, so dlkit's own default (a bounded spin) does not apply
    else:  # dlkit's default, also for the workloads that call dlkit in-process rather than through its CLI
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from dlkit.core.threads import openmp_wait_env

        env.update(openmp_wait_env(env))
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, __file__, "_child", work, data, tmp], env=env, check=True,
                             capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default="lm,translate,superres")
    args = ap.parse_args()
    works = args.work.split(",")
    print("| workload | load | " + " | ".join(c[0] for c in CONFIGS) + " | load average |")
    print("|---|---|" + "---|" * len(CONFIGS) + "---|")
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
        try:
            time.sleep(1.0 if busy else 0.0)
            for work in works:
                cells = []
                for _, threads, wait in CONFIGS:
                    runs = [measure(work, threads, wait, args.data) for _ in range(args.repeats)]
                    cells.append(f"{statistics.median(runs):.2f} s")
                load = os.getloadavg()[0]
                print(f"| {work} | {'busy' if busy else 'idle'} | " + " | ".join(cells) + f" | {load:.1f} |", flush=True)
        finally:
            if hog:
                hog.kill()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(*sys.argv[2:5])
    else:
        main()
