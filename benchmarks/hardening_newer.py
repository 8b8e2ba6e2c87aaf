"""Hostile inputs for caption, caption-train, gan-*, fit-random-labels: exit code, the error line, peak RSS.

Each case runs one dlkit command under ``/usr/bin/time -v`` (GNU time, Linux) with files crafted on the fly in
a temporary folder (bombs, FIFOs, crafted model metadata, pickles); nothing is written into the project.
Prints a Markdown table: case | exit | first error/warning line (cut) | peak RSS.

Usage:
  nice -n 15 env OMP_NUM_THREADS=1 python benchmarks/hardening_newer.py [--cases a,b,...] [--list]
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DL = f"{sys.executable} -m dlkit"


def _npz_bomb(path: Path, shape=(2_000_000, 28, 28), member="x_train") -> Path:
    import numpy as np

    n = 1
    for d in shape:
        n *= d
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open(f"{member}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            block = b"\0" * (64 << 20)
            for _ in range(n // len(block)):
                f.write(block)
            f.write(b"\0" * (n % len(block)))
    return path


def _gz_bomb(path: Path, gb: float, line: bytes) -> Path:
    block = line * ((64 << 20) // len(line))
    with gzip.open(path, "wb", compresslevel=9) as f:
        for _ in range(int(gb * 1e9) // len(block)):
            f.write(block)
    return path


def _png_header(w: int, h: int) -> bytes:
    import struct
    import zlib

    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo PWNED",))


def prepare(tmp: Path) -> dict[str, Path]:
    """The crafted inputs (a few seconds; the toy GAN and tiny dcgan are trained for a few steps)."""
    import numpy as np
    import torch

    from dlkit.core.modelfile import load_model_file, save_model
    from dlkit.core.zoo import resolve_model
    from dlkit.tasks.caption.data import make_shapes_dataset

    f: dict[str, Path] = {}
    f["shapes"] = make_shapes_dataset(tmp / "shapes", n=16)
    bombdir = tmp / "bombshapes"
    make_shapes_dataset(bombdir, n=16)
    (bombdir / "images" / "img003.png").write_bytes(_png_header(100_000, 100_000))
    f["bombshapes"] = bombdir / "captions.txt"
    tensors, meta = load_model_file(resolve_model("flickr8k-attention"), "caption")
    meta = {k: v for k, v in meta.items() if k not in ("format", "aliases", "path")}
    meta["encoder"]["size"] = 60000
    save_model(tmp / "size60000.safetensors", tensors, meta)
    torch.save({"w": torch.zeros(2), "evil": _Evil()}, tmp / "evil.pt")
    f["evil"] = tmp / "evil.pt"
    f["gzcaps"] = _gz_bomb(tmp / "captions.txt.gz", 0.6, b"img000.png,a red circle on the left .\n")
    f["gztext"] = _gz_bomb(tmp / "pretrain.txt.gz", 0.6, b"a red circle on the left .\n")
    f["npzbomb"] = _npz_bomb(tmp / "bomb.npz", shape=(1_600_000, 28, 28))
    f["cifarbomb"] = _npz_bomb(tmp / "cifarbomb.npz", shape=(1_300_000_000,), member="train_jpeg")
    rng = np.random.default_rng(0)
    np.savez(tmp / "mnist.npz", x_train=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8),
             y_train=np.arange(64, dtype=np.uint8) % 10, x_test=rng.integers(0, 256, (16, 28, 28), dtype=np.uint8),
             y_test=np.arange(16, dtype=np.uint8) % 10)
    f["mnist"] = tmp / "mnist.npz"
    photos = tmp / "photos"
    photos.mkdir()
    (photos / "x.png").write_bytes((tmp / "shapes" / "images" / "img000.png").read_bytes())
    home = tmp / "home" / "models"
    home.mkdir(parents=True)
    os.mkfifo(home / "fifo.safetensors")
    for name, args in (("toy", "--dataset gaussian --steps 5"),
                       ("dcgan", f"--dataset mnist --data {f['mnist']} --steps 2 --batch-size 8 --g-width 8 --d-width 8")):
        subprocess.run(f"{DL} gan-train {args} --out {tmp / name} --threads 1 --quiet", shell=True, check=True,
                       env={**os.environ, "DLKIT_HOME": str(tmp / "home")}, capture_output=True)
        f[name] = tmp / name / "model.safetensors"
    return f


def cases(tmp: Path, f: dict[str, Path]) -> dict[str, tuple[str, str]]:
    t1 = "--threads 1"
    ct = f"{DL} caption-train --out {tmp}/ct --overwrite --encoder tiny-cnn --preset tiny --min-count 1 --val-images 4 --epochs 1 --batch-size 8 --no-feature-cache {t1}"
    big = f"{sys.executable} -c \"print('a' * 10**8)\""
    return {
        "flood": ("`print('a'*10**8) | caption -`", f"{big} | {{time}} {DL} caption - {t1}"),
        "encsize": ("caption, model with encoder.size=60000", f"{{time}} {DL} caption {f['shapes'].parent}/images/img000.png -m {tmp}/size60000.safetensors {t1}"),
        "plot": ("caption x.png --attention-plot DIR/ (DIR holds x.png)", f"{{time}} {DL} caption {tmp}/photos/x.png --attention-plot {tmp}/photos {t1}"),
        "threads": ("caption --threads 100000", f"{{time}} {DL} caption {tmp}/photos/x.png --threads 100000"),
        "evilpt": ("caption-train --encoder-weights evil.pt (pickle)", f"{{time}} {ct} --data {f['shapes']} --encoder-weights {f['evil']}"),
        "gzcaps": ("caption-train, 0.6 GB-in-1 MB gzip caption file", f"{{time}} {ct} --data {f['gzcaps']} --images {f['shapes'].parent}/images"),
        "gztext": ("caption-train --pretrain-text 0.6 GB-in-1 MB .gz", f"{{time}} {ct} --data {f['shapes']} --pretrain-text {f['gztext']}"),
        "capsize": ("caption-train --image-size 100000", f"{{time}} {ct} --data {f['shapes']} --image-size 100000"),
        "bombphoto": ("caption-train, one 100000x100000 photo among 16", f"{{time}} {ct} --data {f['bombshapes']}"),
        "stream": ("caption-train --data <(cat captions.txt)", f"{{time}} {ct} --data <(cat {f['shapes']}) --images {f['shapes'].parent}/images"),
        "head": ("`gan-sample -n 1e7 \\| head -1` (toy)", f"{{time}} {DL} gan-sample -m {f['toy']} -n 10000000 {t1} | head -1"),
        "grid": ("gan-sample -n 1e8 --grid", f"{{time}} {DL} gan-sample -m {f['dcgan']} -n 100000000 --grid {tmp}/g.png {t1}"),
        "zdim": ("gan-train --z-dim 1e9", f"{{time}} {DL} gan-train --dataset gaussian --z-dim 1000000000 --out {tmp}/g1 {t1}"),
        "gwidth": ("gan-train --g-width 1e7", f"{{time}} {DL} gan-train --dataset gaussian --g-width 10000000 --out {tmp}/g2 {t1}"),
        "gbatch": ("gan-train --batch-size 1e9 (toy)", f"{{time}} {DL} gan-train --dataset gaussian --batch-size 1000000000 --out {tmp}/g3 {t1}"),
        "gmlp": ("gan-train --arch mlp --image-size 100000", f"{{time}} {DL} gan-train --dataset mnist --data {f['mnist']} --arch mlp --image-size 100000 --out {tmp}/g4 {t1}"),
        "gnpz": ("gan-train --data small .npz holding 1.25 GB of zeros", f"{{time}} {DL} gan-train --dataset mnist --data {f['npzbomb']} --out {tmp}/g5 {t1}"),
        "gmodel": ("gan-train --data model.safetensors", f"{{time}} {DL} gan-train --dataset mnist --data {f['toy']} --out {tmp}/g6 {t1}"),
        "dsteps": ("gan-train --d-steps 1e9 --max-time 0.05", f"{{time}} {DL} gan-train --dataset gaussian --d-steps 1000000000 --max-time 0.05 --out {tmp}/g7 {t1} --quiet"),
        "evaln": ("gan-eval -n 1e9", f"{{time}} {DL} gan-eval -m {f['dcgan']} --dataset mnist --data {f['mnist']} -n 1000000000 {t1}"),
        "evalfifo": ("gan-eval --inception FIFO", f"{{time}} {DL} gan-eval -m {f['dcgan']} --dataset mnist --data {f['mnist']} --inception {tmp}/home/models/fifo.safetensors {t1}"),
        "seed": ("gan-sample --seed 10^23", f"{{time}} {DL} gan-sample -m {f['toy']} -n 2 --seed 100000000000000000000000 {t1}"),
        "rlsize": ("fit-random-labels --image-size 100000", f"{{time}} {DL} fit-random-labels --dataset mnist --data {f['mnist']} --image-size 100000 --out {tmp}/r1 {t1}"),
        "rlnpz": ("fit-random-labels --dataset cifar10, 1.3 GB member in a small .npz", f"{{time}} {DL} fit-random-labels --dataset cifar10 --data {f['cifarbomb']} --out {tmp}/r2 {t1}"),
        "rlmissing": ("fit-random-labels --data missing.npz", f"{{time}} {DL} fit-random-labels --dataset mnist --data {tmp}/none.npz --out {tmp}/r3 {t1}"),
        "models": ("`dlkit models` with a FIFO in $DLKIT_HOME/models", f"{{time}} {DL} models"),
        "fifomodel": ("caption --model FIFO", f"{{time}} {DL} caption {tmp}/photos/x.png -m {tmp}/home/models/fifo.safetensors {t1}"),
    }


def run(cmd: str, env: dict) -> dict:
    timed = cmd.replace("{time}", "/usr/bin/time -v")
    p = subprocess.run(["bash", "-c", f"set -o pipefail; {timed}"], capture_output=True, text=True, env=env, timeout=900)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    status = re.search(r"Exit status: (\d+)", p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith(("error:", "warning:"))]
    return {"exit": int(status.group(1)) if status else p.returncode, "line": (lines[0] if lines else "(none)"),
            "stderr_bytes": len(p.stderr), "rss_mb": int(rss.group(1)) / 1024 if rss else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = {**os.environ, "DLKIT_HOME": str(tmp / "home"), "OMP_NUM_THREADS": "1"}
        os.environ["DLKIT_HOME"] = env["DLKIT_HOME"]
        f = prepare(tmp)
        table = cases(tmp, f)
        if a.list:
            print("\n".join(f"{k}: {v[0]}" for k, v in table.items()))
            return
        wanted = [c for c in a.cases.split(",") if c] or list(table)
        print("| case | exit | first error/warning line | stderr bytes | peak RSS |")
        print("|---|---|---|---|---|")
        for key in wanted:
            what, cmd = table[key]
            r = run(cmd, env)
            line = r["line"].replace(str(tmp), "T").replace("|", "\\|")
            line = line if len(line) <= 150 else line[:147] + "..."
            print(f"| {what} | {r['exit']} | {line} | {r['stderr_bytes']:,} | {r['rss_mb']:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
