"""Language-model benchmarks (issue 2, section 7). Prints a Markdown table for benchmarks/RESULTS.md.

  python benchmarks/lm_bench.py throughput     # nanoGPT's CPU config through dlkit's training loop
  python benchmarks/lm_bench.py sample         # lm-sample with and without the KV cache, 500 tokens
  python benchmarks/lm_bench.py rss            # peak RSS of lm-train on a 100 MB text file
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def machine() -> str:
    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"


def throughput(steps: int = 60, warm: int = 10) -> None:
    """nanoGPT CPU config: 4 layers, 4 heads, d=128, context 64, batch 12, no dropout, no compile."""
    import io

    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.lm.data import make_text
    from dlkit.tasks.lm.train import TrainConfig, train

    class Clock(io.StringIO):
        def __init__(self):
            super().__init__()
            self.times = []

        def write(self, s):
            if '"event": "step"' in s:
                self.times.append(time.perf_counter())
            return len(s)

    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "text.txt"
        data.write_text(make_text(500_000))
        clock = Clock()
        cfg = TrainConfig(data=str(data), out=d + "/run", preset="small", dropout=0.0, batch_size=12, steps=steps,
                          eval_every=10**9, sample_tokens=0, eval_iters=1)
        train(cfg, make_runtime("cpu", "fp32", 0, False), Reporter(quiet=True, json_mode=True, stdout=clock))
    dt = (clock.times[-1] - clock.times[warm]) / (len(clock.times) - 1 - warm)
    tps = 12 * 64 / dt
    print(f"| lm-train, nanoGPT CPU config (4L/4H/128, ctx 64, batch 12, fp32) | {dt * 1000:.1f} ms/iter | "
          f"{tps:,.0f} tokens/s | {75 / (dt * 1000):.2f}x nanoGPT's 75 ms/iter | {machine()} |")


def sample(n: int = 500, model: str | None = None) -> None:
    import torch

    from dlkit.tasks.lm.infer import generate
    from dlkit.tasks.lm.model import GPT, preset
    from dlkit.tasks.lm.train import load_lm

    if model:
        m, _, _ = load_lm(model)
        name = Path(model).name
    else:
        torch.manual_seed(0)
        m = GPT(preset("baby", vocab_size=65, dropout=0.0)).eval()
        name = "baby preset (random weights)"
    prompt = torch.zeros(1, 1, dtype=torch.long)
    rates = {}
    for cache in (True, False):
        g = torch.Generator().manual_seed(0)
        t = time.perf_counter()
        out = list(generate(m, prompt, n, 1.0, None, None, g, use_cache=cache))
        rates[cache] = len(out) / (time.perf_counter() - t)
    print(f"| lm-sample {n} tokens, {name}, context {m.cfg.block_size} | cached {rates[True]:,.0f} tokens/s | "
          f"uncached {rates[False]:,.0f} tokens/s | {rates[True] / rates[False]:.1f}x | {machine()} |")


def rss(mb: int = 100) -> None:
    words = np.array("the king shall speak of love and night upon a sword in thy sweet heart my lord".split())
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "big.txt"
        rng = np.random.default_rng(0)
        block = "\n".join(" ".join(rng.choice(words, 200)) for _ in range(10_000)) + "\n"  # ~10 MB
        with open(data, "w") as f:
            while f.tell() < mb * 1_000_000:
                f.write(block)
        size = data.stat().st_size
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dlkit", "lm-train", "--data", str(data), "--preset", "small",
                        "--steps", "20", "--eval-every", "10", "--eval-iters", "5", "--out", d + "/run", "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(f"| lm-train peak RSS, {size / 1e6:.0f} MB text, preset small, 20 steps | {peak:,.0f} MiB | "
          f"{time.perf_counter() - t:.0f} s incl. encoding | {machine()} |")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("throughput", "all"):
        throughput()
    if what in ("sample", "all"):
        sample(model=sys.argv[2] if len(sys.argv) > 2 else None)
    if what in ("rss", "all"):
        rss()
