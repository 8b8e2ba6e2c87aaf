"""The peer cross-check of issue 22: KellerJordan/cifar10-airbench's own ``legacy/airbench94.py`` run on the
project's CIFAR-10 file (``cifar10_jpeg.npz``), on the CPU, to tell the recipe's ceiling on this data apart from
dlkit's implementation of it.

  python benchmarks/airbench_peer.py .peers/airbench --data ../shared/data/cifar10_jpeg.npz [--runs 1]

The checkout stays outside the project (an ignored folder such as ``.peers/airbench``: fetch it, never copy it in).
The script writes a CPU variant of the peer's file into a work folder and runs it there, unchanged but for:

* the data: ``train.pt`` / ``test.pt`` in the peer's format, decoded by dlkit's own reader (the same pixels
  ``classifier-train`` sees), instead of torchvision's download;
* the arithmetic: fp32 weights with bf16 autocast on the CPU instead of fp16 weights on CUDA (BatchNorm stays
  fp32, as the peer keeps it), CUDA events replaced by ``time.perf_counter``;
* the number of runs (``--runs``; the peer averages 25) and, for a smoke test only, ``--epochs`` and ``--limit``.

Every hyperparameter (widths, batch 1,024, learning rate, momentum, weight decay, label smoothing, the flip and
translate scheme, lookahead, TTA) is the peer's. The peer's table is printed as it prints it; ``uptime`` before
and after (an accuracy, not a timing: the seconds in its table are for orientation only).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PEER_FILE = "legacy/airbench94.py"

# (peer text, replacement): each must occur in the peer's file, else the checkout is not the one this was made for
PATCHES = [
    ("torch.backends.cudnn.benchmark = True",
     "import time\ntorch.set_num_threads(int(os.environ.get('PEER_THREADS', '2')))\n"
     "AC = lambda: torch.autocast('cpu', dtype=torch.bfloat16)"),
    ("map_location=torch.device(gpu)", "map_location='cpu'"),
    ("self.images = (self.images.half() / 255)", "self.images = (self.images.float() / 255)"),
    ("net = net.half().cuda()", "net = net.float()"),
    ("    starter = torch.cuda.Event(enable_timing=True)\n    ender = torch.cuda.Event(enable_timing=True)",
     "    class _Clock:\n"
     "        def record(self): self.t = time.perf_counter()\n"
     "        def elapsed_time(self, other): return 1e3 * (other.t - self.t)\n"
     "    starter, ender = _Clock(), _Clock()"),
    ("torch.cuda.synchronize()", "pass"),
    ("            outputs = model(inputs)\n", "            with AC():\n                outputs = model(inputs)\n"),
    ("        return torch.cat([infer_fn(inputs, model) for inputs in test_images.split(2000)])",
     "        with AC():\n"
     "            return torch.cat([infer_fn(inputs, model).float() for inputs in test_images.split(2000)])"),
    ("'train_epochs': 9.9,", "'train_epochs': float(os.environ.get('PEER_EPOCHS', '9.9')),"),
    ("accs = torch.tensor([main(run) for run in range(25)])",
     "accs = torch.tensor([main(run) for run in range(int(os.environ.get('PEER_RUNS', '1')))])"),
]


def patch(source: str) -> str:
    for old, new in PATCHES:
        if old not in source:
            raise SystemExit(f"airbench_peer: '{old.strip()[:60]}' is not in {PEER_FILE}: a different version of the peer")
        source = source.replace(old, new)
    return source


def write_data(data: Path, folder: Path, limit: int | None) -> None:
    """The peer's ``cifar10/{train,test}.pt``: uint8 (N, 32, 32, 3) images, int64 labels, class names."""
    import torch

    from dlkit.vision.datasets import load_cifar10

    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        d = load_cifar10(data, split)
        images, labels = d.images, d.labels
        if limit and split == "train":
            pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:limit]
            images, labels = images[pick], labels[pick]
        torch.save({"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels, "classes": d.classes},
                   folder / f"{split}.pt")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkout", type=Path, help="a checkout of KellerJordan/cifar10-airbench")
    ap.add_argument("--data", type=Path, required=True, help="cifar10_jpeg.npz")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=None, help="smoke tests only (the peer's 9.9 otherwise)")
    ap.add_argument("--limit", type=int, default=None, help="training images (smoke tests only)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)

    peer = args.checkout / PEER_FILE
    if not peer.is_file():
        raise SystemExit(f"airbench_peer: no {PEER_FILE} under {args.checkout}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="airbench-peer-"))
    write_data(args.data, work / "cifar10", args.limit)
    (work / "airbench94_cpu.py").write_text(patch(peer.read_text()))
    env = dict(os.environ, PEER_RUNS=str(args.runs), PEER_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    if args.epochs is not None:
        env["PEER_EPOCHS"] = str(args.epochs)
    commit = "(not a git checkout)"
    if (args.checkout / ".git").exists():
        commit = subprocess.run(["git", "-C", str(args.checkout), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    print(f"peer: {peer} at {commit}; work folder {work}", flush=True)
    print("uptime before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    rc = subprocess.run([sys.executable, "airbench94_cpu.py"], cwd=work, env=env).returncode
    print("uptime after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
