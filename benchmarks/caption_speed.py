"""Captioning speed on the CPU: a folder of 256 photos, and `dlkit caption one.jpg` end to end.

Measures, for one model and beam size:
  * in-process: images/s captioning a folder of --n photos (decode + resize, encoder, beam search), batched as
    the CLI does, with the time split into image loading, encoder and decoder;
  * `dlkit caption FOLDER` as a process (start-up and model loading included) -> images/s;
  * `dlkit caption one.jpg` end to end, median of --e2e-runs runs, beside `python -c "import torch"`.

The folder is made of symbolic links to the first --n photos of --data (nothing is copied).

Usage:
  python benchmarks/caption_speed.py --model flickr8k-attention --data ../shared/data/flickr8k/images --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dlkit.core.threads import openmp_wait_env  # noqa: E402

os.environ.update(openmp_wait_env(os.environ))  # as the dlkit command does, before torch loads


def _timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="flickr8k-attention")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "flickr8k" / "images"))
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: dlkit's default)")
    ap.add_argument("--e2e-runs", type=int, default=3)
    args = ap.parse_args()

    import torch

    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.caption.encoder import feature_map
    from dlkit.tasks.caption.features import load_pixels
    from dlkit.tasks.caption.infer import caption_features, load_captioner

    rt = make_runtime("cpu", "fp32", 0, distributed=False, threads=args.threads or None)
    cap = load_captioner(args.model, rt.device)
    photos = sorted(Path(args.data).glob("*.jpg"))[: args.n]
    folder = Path(tempfile.mkdtemp(prefix="caption-bench-"))
    for p in photos:
        os.symlink(p.resolve(), folder / p.name)

    t_load = t_enc = t_dec = 0.0
    with torch.inference_mode():
        for i in range(0, len(photos), args.batch_size):
            t0 = time.perf_counter()
            x = torch.stack([load_pixels(p, cap.spec) for p in photos[i : i + args.batch_size]])
            t1 = time.perf_counter()
            feats = feature_map(cap.encoder, x)
            t2 = time.perf_counter()
            caption_features(cap, feats, beam=args.beam)
            t3 = time.perf_counter()
            t_load, t_enc, t_dec = t_load + t1 - t0, t_enc + t2 - t1, t_dec + t3 - t2
    total = t_load + t_enc + t_dec

    env = dict(os.environ)
    threads = ["--threads", str(args.threads)] if args.threads else []
    dlkit = [sys.executable, "-m", "dlkit", "caption"]
    proc = _timed(dlkit + [str(folder), "--model", args.model, "--beam", str(args.beam), "--quiet"] + threads, env)
    one = [_timed(dlkit + [str(photos[0]), "--model", args.model, "--quiet"] + threads, env) for _ in range(args.e2e_runs)]
    bare = [_timed([sys.executable, "-c", "import torch"], env) for _ in range(args.e2e_runs)]
    print(json.dumps({
        "model": args.model, "images": len(photos), "beam": args.beam, "batch_size": args.batch_size,
        "threads": torch.get_num_threads(), "in_process_images_per_s": round(len(photos) / total, 1),
        "seconds": {"load_resize": round(t_load, 2), "encoder": round(t_enc, 2), "decoder": round(t_dec, 2)},
        "process_images_per_s": round(len(photos) / proc, 1), "process_seconds": round(proc, 2),
        "one_jpg_seconds_median": round(statistics.median(one), 2), "one_jpg_runs": [round(x, 2) for x in one],
        "import_torch_seconds_median": round(statistics.median(bare), 2),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}",
    }, indent=1))


if __name__ == "__main__":
    main()
