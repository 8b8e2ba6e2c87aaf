"""Which OpenMP wait policy should dlkit start torch with? A training step of lm and of a convnet, idle and busy.

  flock /tmp/dlkit-heavy.lock python benchmarks/omp_policy.py [--seconds 6] [--policies passive,active,...]

torch's CPU wheels use GNU OpenMP (libgomp): after a parallel region its threads spin ``GOMP_SPINCOUNT``
times (300,000, about 3 ms, when ``OMP_WAIT_POLICY`` is unset; "infinite" with ACTIVE; 0 with PASSIVE)
before they sleep. Each cell runs in a fresh process with 2 torch threads (what ``--threads 2`` or an idle
start-up picks) and reports the median ms of a training step:

* ``lm``: nanoGPT's CPU config (4 layers, d=128, context 64, batch 12), forward + backward + AdamW;
* ``conv``: the airbench94 network (whitening conv, groups of 64/256/256), batch 128 of 32x32, channels_last, SGD.

"busy" = two pure-Python processes spinning beside it (one core each); "busy-torch" = another torch process with
2 threads doing matmuls beside it (a second training: the case that made spinning 20-40x slower).
Prints a Markdown table with the load average of each row. Take it idle: ``uptime`` < 0.5 before it starts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {  # label -> environment
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "libgomp default (300k)": {},
    "spin 1k": {"GOMP_SPINCOUNT": "1000"},
    "spin 10k": {"GOMP_SPINCOUNT": "10000"},
    "spin 30k": {"GOMP_SPINCOUNT": "30000"},
    "spin 100k": {"GOMP_SPINCOUNT": "100000"},
}
# the hogs: "busy" = two pure-Python processes (one core each); "busy-torch" = another torch training beside it
# (2 threads, matmuls, OpenMP PASSIVE: what a second dlkit run did before), the case that made spinning 20-40x slower
HOG = "import time\nwhile True:\n    pass\n"
TORCH_HOG = ("import torch\ntorch.set_num_threads(2)\na = torch.randn(256, 256)\nwhile True:\n"
             "    a = (a @ a).tanh()\n")


def step_fn(work: str):
    import torch

    torch.manual_seed(0)
    if work == "lm":
        from dlkit.tasks.lm.model import GPT, preset

        model = GPT(preset("small", vocab_size=65))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randint(65, (12, 64))

        def step():
            _, loss = model(x, x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step
    from dlkit.nets.classifiers import build_classifier

    model = build_classifier("airbench", 3, 10, 32).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(10, (128,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def child(work: str, seconds: float) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(2)
    step = step_fn(work)
    for _ in range(3):
        step()
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    print(statistics.median(times) * 1000)


def measure(work: str, env_extra: dict, seconds: float) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, __file__, "_child", work, str(seconds)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per cell (after 3 warm-up steps)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--work", default="lm,conv")
    ap.add_argument("--busy", default="idle,busy,busy-torch")
    args = ap.parse_args()
    labels = args.policies.split(",")
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    print("| step (ms, median) | machine | " + " | ".join(labels) + " | load average |")
    print("|---|---|" + "---|" * len(labels) + "---|", flush=True)
    for busy in args.busy.split(","):
        if busy == "busy-torch":
            hogs = [subprocess.Popen([sys.executable, "-c", TORCH_HOG], env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})]
        else:
            hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(2)] if busy == "busy" else []
        try:
            time.sleep(1.0 if hogs else 0.0)
            for work in args.work.split(","):
                cells = [f"{measure(work, POLICIES[p], args.seconds):.1f}" for p in labels]
                print(f"| {work} | {busy} | " + " | ".join(cells) + f" | {os.getloadavg()[0]:.2f} |", flush=True)
        finally:
            for h in hogs:
                h.kill()
                h.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], float(sys.argv[3]))
    else:
        main()
