"""Language-model benchmarks (issue 2, section 7). Prints a Markdown table for benchmarks/RESULTS.md.

  python benchmarks/lm_bench.py throughput [NANOGPT_DIR]  # nanoGPT's CPU config: dlkit's loop, and nanoGPT's
                                                          # own train.py side by side when its checkout is given
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


NANOGPT_CPU = ["--device=cpu", "--compile=False", "--dtype=float32", "--eval_iters=1", "--eval_interval=100000",
               "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
               "--dropout=0.0", "--gradient_accumulation_steps=1", "--always_save_checkpoint=False"]


def _dlkit_seconds(data: Path, out: str, steps: int) -> float:
    """Wall time of dlkit's own training loop for ``steps`` steps of nanoGPT's CPU config."""
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.lm.train import TrainConfig, train

    cfg = TrainConfig(data=str(data), out=out, preset="small", dropout=0.0, batch_size=12, steps=steps,
                      eval_every=10**9, sample_tokens=0, eval_iters=1)
    t = time.perf_counter()
    train(cfg, make_runtime("cpu", "fp32", 0, False), Reporter(quiet=True))
    return time.perf_counter() - t


def _nanogpt_ms(nanogpt: Path, text: str, steps: int, warm: int) -> float:
    """Median ms/iter of nanoGPT's own train.py (run from its checkout, outside the project) on the same text."""
    import pickle
    import statistics

    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    data_dir = nanogpt / "data" / "dlkit_bench"
    data_dir.mkdir(parents=True, exist_ok=True)
    n = int(0.9 * len(ids))
    ids[:n].tofile(data_dir / "train.bin")
    ids[n:].tofile(data_dir / "val.bin")
    with open(data_dir / "meta.pkl", "wb") as f:  # nanoGPT's own format, read by nanoGPT only
        pickle.dump({"vocab_size": len(chars)}, f)
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "train.py", "--dataset=dlkit_bench", f"--out_dir={out}", f"--max_iters={steps}",
               f"--lr_decay_iters={steps}", *NANOGPT_CPU]
        log = subprocess.run(cmd, cwd=nanogpt, check=True, capture_output=True, text=True).stdout
    times = [float(line.split("time ")[1].split("ms")[0]) for line in log.splitlines() if line.startswith("iter ")]
    return statistics.median(times[warm:])


def throughput(steps: int = 60, warm: int = 10, nanogpt: str | None = None, repeats: int = 3) -> None:
    """nanoGPT's CPU config (4 layers, 4 heads, d=128, context 64, batch 12, no dropout, no compile, fp32).

    dlkit's ms/iter is (time of warm+steps steps - time of warm steps) / steps, so start-up, encoding and the
    final save cancel out. With ``nanogpt`` (a checkout of karpathy/nanoGPT, e.g. an ignored ``.peers/nanoGPT``)
    nanoGPT's own train.py runs on the same text in the same session and the ratio comes from this one run.
    The two alternate ``repeats`` times and each side reports its median, so a burst of load elsewhere on
    the machine hits both.
    """
    import statistics

    from dlkit.tasks.lm.data import make_text

    mine, theirs = [], []
    with tempfile.TemporaryDirectory() as d:
        text = make_text(500_000)
        data = Path(d) / "text.txt"
        data.write_text(text)
        for r in range(repeats):
            short = _dlkit_seconds(data, f"{d}/a{r}", warm)
            full = _dlkit_seconds(data, f"{d}/b{r}", warm + steps)
            mine.append((full - short) / steps * 1000)
            if nanogpt:
                theirs.append(_nanogpt_ms(Path(nanogpt), text, warm + steps, warm))
    ms = statistics.median(mine)
    peer = statistics.median(theirs) if theirs else None
    ratio = f"nanoGPT {peer:.1f} ms/iter -> **{peer / ms:.2f}x**" if peer else "nanoGPT not run (pass its checkout)"
    print(f"| lm-train, nanoGPT CPU config (4L/4H/128, ctx 64, batch 12, fp32) | dlkit {ms:.1f} ms/iter, "
          f"{12 * 64 / ms * 1000:,.0f} tokens/s | {ratio} | {machine()} |")


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
        m = GPT(preset("large", vocab_size=65, dropout=0.0)).eval()
        name = "large preset (random weights)"
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
        throughput(nanogpt=sys.argv[2] if what == "throughput" and len(sys.argv) > 2 else None)
    if what in ("sample", "all"):
        sample(model=sys.argv[2] if what == "sample" and len(sys.argv) > 2 else None)
    if what in ("rss", "all"):
        rss()
