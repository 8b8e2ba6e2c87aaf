"""Language-model benchmarks (issue 2, section 7). Prints a Markdown table for benchmarks/RESULTS.md.

  python benchmarks/lm_bench.py throughput [NANOGPT_DIR] [--config cpu|baby] [--steps 200]
      # `dlkit lm-train` as users run it against nanoGPT's own train.py (a checkout, e.g. .peers/nanoGPT) on Tiny
      # Shakespeare: ms/step and the training losses at the same steps, both from one run
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

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"


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


CONFIGS = {  # name -> (dlkit lm-train flags, nanoGPT train.py flags, the label in the table)
    "cpu": (["--preset", "small", "--dropout", "0", "--batch-size", "12"],
            ["--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0"],
            "nanoGPT CPU config (4L/4H/128, ctx 64, batch 12, dropout 0)"),
    "baby": (["--preset", "large", "--batch-size", "8"],
             ["--block_size=256", "--batch_size=8", "--n_layer=6", "--n_head=6", "--n_embd=384", "--dropout=0.2"],
             "baby GPT (6L/6H/384, ctx 256, batch 8, dropout 0.2)"),
}
# the same recipe on both sides: lr 1e-3 -> 1e-4 cosine after 100 warmup steps, AdamW betas (0.9, 0.99), wd 0.1,
# clip 1, fp32, no compile, no evaluation inside the timed steps
NANOGPT_COMMON = ["--device=cpu", "--compile=False", "--dtype=float32", "--eval_iters=1", "--eval_interval=1000000",
                  "--log_interval=1", "--gradient_accumulation_steps=1", "--always_save_checkpoint=False",
                  "--learning_rate=1e-3", "--min_lr=1e-4", "--warmup_iters=100", "--beta2=0.99",
                  "--weight_decay=0.1", "--grad_clip=1.0", "--decay_lr=True"]
_OMP_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "KMP_BLOCKTIME")


def _clean_env(extra: dict | None = None) -> dict:
    """The environment a user has: no OpenMP settings of ours (each program applies its own defaults), plus
    ``extra`` (a user's own settings, e.g. OMP_WAIT_POLICY=ACTIVE, for one side)."""
    env = {k: v for k, v in os.environ.items() if k not in _OMP_KEYS}
    env.update(extra or {})
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _timed_lines(cmd: list, cwd: Path, parse, env: dict | None = None) -> dict[int, tuple[float, float]]:
    """Run ``cmd``; for every stdout line that ``parse`` turns into (step, loss), the arrival time and loss
    (key 0: the start of the process, so that the whole run's time can be read too)."""
    seen = {0: (time.perf_counter(), float("nan"))}
    with subprocess.Popen(cmd, cwd=cwd, env=_clean_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, bufsize=1) as p:
        for line in p.stdout:
            hit = parse(line)
            if hit:
                seen[hit[0]] = (time.perf_counter(), hit[1])
        err = p.stderr.read()
    if p.returncode:
        raise SystemExit(f"{cmd[:4]} failed ({p.returncode}): {err.strip().splitlines()[-1:]}")
    return seen


def _dlkit_line(line: str):
    import json

    if line.startswith("{") and '"event": "step"' in line:
        e = json.loads(line)
        return e["step"], e["loss"]
    return None


def _nanogpt_line(line: str):
    if line.startswith("iter "):  # "iter K: loss X, time ..." is the loss before update K+1: dlkit's step K+1
        return int(line.split()[1].rstrip(":")) + 1, float(line.split("loss ")[1].split(",")[0])
    return None


def run_dlkit(data: Path, out: str, config: str, steps: int, args: tuple = (), env: dict | None = None) -> dict:
    """``dlkit lm-train`` as a user runs it (the CLI with its OpenMP and thread defaults; ``args`` and ``env``:
    a user's own extra flags and settings), step events timed."""
    cmd = [sys.executable, "-m", "dlkit", "lm-train", "--data", str(data), "--out", out, *CONFIGS[config][0],
           "--steps", str(steps), "--eval-every", "1000000", "--eval-iters", "1", "--sample-tokens", "0", "--json",
           *args]
    return _timed_lines(cmd, ROOT, _dlkit_line, env)


def run_nanogpt(nanogpt: Path, data: Path, config: str, steps: int, extra: tuple = ()) -> dict:
    """nanoGPT's own train.py from its checkout on the same characters (its data format, written here)."""
    import pickle

    text = data.read_text()
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
               f"--lr_decay_iters={steps}", *NANOGPT_COMMON, *CONFIGS[config][1], *extra]
        return _timed_lines(cmd, nanogpt, _nanogpt_line)


def _ms_per_step(seen: dict, warm: int, steps: int) -> float:
    return (seen[steps][0] - seen[warm][0]) / (steps - warm) * 1000


def _mean_loss(seen: dict, lo: int, hi: int) -> float:
    vals = [seen[s][1] for s in range(lo, hi + 1, 10) if s in seen]
    return sum(vals) / len(vals)


def throughput(nanogpt: str | None, data: str, config: str = "cpu", steps: int = 200, warm: int = 10,
               repeats: int = 3, args: tuple = (), env: dict | None = None, peer_args: tuple = ()) -> None:
    """Both trainers as users run them, alternating ``repeats`` times; each side's median ms/step over steps
    ``warm``..``steps`` (from the arrival times of their per-step log lines: start-up, data preparation and the
    final save do not count) and their training losses at the same steps (each step's batch loss; the batches
    are drawn by each program's own RNG, so a few hundredths of a nat apart is noise)."""
    import statistics

    mine, theirs, curves = [], [], []
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as d:
        for r in range(repeats):
            a = run_dlkit(Path(data), f"{d}/run{r}", config, steps, args, env)
            mine.append(_ms_per_step(a, warm, steps))
            b = run_nanogpt(Path(nanogpt), Path(data), config, steps, peer_args) if nanogpt else None
            if b:
                theirs.append(_ms_per_step(b, warm, steps))
            curves.append((a, b))
            print(f"  repeat {r}: dlkit {mine[-1]:.1f} ms/step" + (f", nanoGPT {theirs[-1]:.1f}" if b else "")
                  + f"; process start to step {steps}: dlkit {a[steps][0] - a[0][0]:.1f} s"
                  + (f", nanoGPT {b[steps][0] - b[0][0]:.1f} s" if b else "")
                  + f" (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    ms = statistics.median(mine)
    a, b = curves[0]
    late = (max(warm, steps - 50), steps)
    loss = f"loss steps {late[0]}-{late[1]}: dlkit {_mean_loss(a, *late):.3f}"
    if b:
        peer = statistics.median(theirs)
        ratio = f"nanoGPT {peer:.1f} ms/step -> **{peer / ms:.2f}x**"
        loss += f", nanoGPT {_mean_loss(b, *late):.3f}"
        loss += "; at " + ", ".join(f"{s}: {a[s][1]:.2f}/{b[s][1]:.2f}" for s in range(50, steps + 1, 50) if s in a and s in b)
    else:
        ratio = "nanoGPT not run (pass its checkout)"
    extra = " ".join([*(f"{k}={v}" for k, v in (env or {}).items()), *args])
    extra += f" (nanoGPT {' '.join(peer_args)})" if peer_args else ""
    print(f"| lm-train via the CLI{' ' + extra if extra else ''}, {CONFIGS[config][2]}, {steps} steps | dlkit {ms:.1f} ms/step | {ratio} | {loss} | "
          f"load {os.getloadavg()[0]:.2f} | {machine()} |", flush=True)


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
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", default="all", choices=("throughput", "sample", "rss", "all"))
    ap.add_argument("nanogpt", nargs="?", help="throughput: a checkout of karpathy/nanoGPT (e.g. .peers/nanoGPT); "
                    "sample: a model file")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"),
                    help="throughput: the training text (Tiny Shakespeare, as nanoGPT's shakespeare_char)")
    ap.add_argument("--config", default="cpu", choices=tuple(CONFIGS))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dlkit-args", default="", help="throughput: extra lm-train flags, e.g. '--compile'")
    ap.add_argument("--dlkit-env", action="append", default=[], metavar="KEY=VALUE",
                    help="throughput: a setting for the dlkit side only, e.g. OMP_WAIT_POLICY=ACTIVE (repeatable)")
    ap.add_argument("--nanogpt-args", default="", help="throughput: extra train.py settings, e.g. '--compile=True'")
    args = ap.parse_args()
    if args.what in ("throughput", "all"):
        throughput(args.nanogpt if args.what == "throughput" else None, args.data, args.config, args.steps,
                   repeats=args.repeats, args=tuple(args.dlkit_args.split()),
                   env=dict(kv.split("=", 1) for kv in args.dlkit_env), peer_args=tuple(args.nanogpt_args.split()))
    if args.what in ("sample", "all"):
        sample(model=args.nanogpt if args.what == "sample" else None)
    if args.what in ("rss", "all"):
        rss()
