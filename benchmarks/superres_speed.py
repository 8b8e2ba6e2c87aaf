"""Super-resolution speed and memory on this machine.

    python benchmarks/superres_speed.py [--model srresnet-x4] [--threads 2] [--tile 128 (default: automatic)]

1. Seconds for x4 of a 256x256 RGB image (model forward only, median of --repeats, after one warm-up), in fp32
   and under CPU bf16 autocast (`dlkit superres --precision bf16`).
2. Peak RSS of a whole `dlkit superres` run (load, upscale with automatic tiles or --tile, write PNG) on a 1024x1024 input
   (4096x4096 output), measured from a child process with getrusage.
3. With CUDA: output megapixels/s in bf16.
Speed depends on the architecture only, so an untrained model of the same config gives the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def model_path(spec: str | None, tmp: Path) -> tuple[str, str]:
    from dlkit.core.errors import DlkitError
    from dlkit.core.zoo import resolve_model

    try:
        return str(resolve_model(spec or "srresnet-x4", "superres")), spec or "srresnet-x4"
    except DlkitError:
        from dlkit.core.modelfile import save_model
        from dlkit.tasks.superres.model import PRESETS, build_model

        cfg = PRESETS["small"]
        p = tmp / "untrained-small-x4.safetensors"
        save_model(p, build_model(cfg).state_dict(), {"task": "superres", "arch": "srresnet",
                                                        "config": {**cfg.to_dict(), "rgb_mean": list(cfg.rgb_mean)}, "scale": 4})
        return str(p), "untrained 'small' preset (same architecture as srresnet-x4)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--tile", type=int, default=None, help="LR tile side for the big run (default: dlkit's automatic tiles)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from dlkit.tasks.superres import infer

    tmp = Path(tempfile.mkdtemp(prefix="srbench"))
    path, label = model_path(args.model, tmp)
    model, meta = infer.load_model(path)
    rng = np.random.default_rng(0)
    lr = torch.from_numpy(rng.random((1, 3, 256, 256), dtype=np.float32))
    result = {"machine": f"{cpu_name()}, {os.cpu_count()} cores", "torch": torch.__version__, "threads": args.threads,
              "model": label}
    from dlkit.core.runtime import make_runtime

    for prec, name in (("", "fp32"), ("_bf16", "bf16")):
        rt = make_runtime("cpu", name, 0, distributed=False, threads=args.threads)
        times = []
        for i in range(args.repeats + 1):
            t0 = time.perf_counter()
            infer.upscale_tensor(model, lr, 4, tile=0, rt=rt)
            if i:
                times.append(time.perf_counter() - t0)
        result[f"x4_256px_seconds{prec}"] = round(statistics.median(times), 2)

    big = tmp / "big.png"
    Image.fromarray(rng.integers(0, 256, (args.big, args.big, 3), dtype=np.uint8)).save(big)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "dlkit", "superres", str(big), "-o", str(tmp / "big_x4.png"), "-m", path,
                          *(["--tile", str(args.tile)] if args.tile is not None else []), "--device", "cpu", "-q"], capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    tile = "auto" if args.tile is None else args.tile
    result.update({f"x4_{args.big}px_tile{tile}_seconds": round(time.perf_counter() - t0, 1),
                   f"x4_{args.big}px_tile{tile}_peak_rss_mib": round(peak_kib / 1024),
                   "output": list(Image.open(tmp / "big_x4.png").size)})
    if torch.cuda.is_available():
        m = model.cuda()
        x = torch.rand(1, 3, 512, 512, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
            m(x)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(5):
                m(x)
            torch.cuda.synchronize()
        result["gpu"] = torch.cuda.get_device_name()
        result["gpu_bf16_output_mpix_per_s"] = round(5 * 2048 * 2048 / 1e6 / (time.perf_counter() - t0), 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
