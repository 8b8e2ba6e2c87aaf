"""``--download`` for MNIST and CIFAR-10: the original files, checked, converted once into an ``.npz``.

:func:`dataset_npz` fetches the original release through :mod:`dlkit.core.download` (SHA-256 checked) and
writes ``$DLKIT_HOME/data/<name>.npz`` with plain uint8 arrays ``x_train``, ``y_train``, ``x_test``,
``y_test`` (MNIST (N, 28, 28); CIFAR-10 (N, 32, 32, 3)), which the dataset readers load like any ``--data``
file. MNIST comes as IDX files and CIFAR-10 as its binary release: no pickle is ever read.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np

from dlkit.core import download as dl
from dlkit.core.atomic import atomic_write
from dlkit.core.errors import DataError

CIFAR10_MEMBERS = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}


def dataset_npz(name: str, root: str | Path | None = None) -> Path:
    """``root/<name>.npz`` (default ``$DLKIT_HOME/data``), downloading and converting it the first time."""
    root = Path(root if root is not None else dl.data_dir())
    npz = root / f"{name}.npz"
    if npz.is_file():  # written only from checked originals
        return npz
    files = dl.download(name, root)
    arrays = _mnist(files) if name == "mnist" else _cifar10(files[0])
    atomic_write(npz, lambda f: np.savez_compressed(f, **arrays))
    return npz


def read_idx(data: bytes, what: str) -> np.ndarray:
    """An IDX file (LeCun's format: magic 0x0803/0x0801, big-endian sizes, uint8 data) -> uint8 array."""
    if len(data) < 8 or data[:2] != b"\0\0" or data[2] != 8 or data[3] not in (1, 3):
        raise DataError(f"{what} is not a uint8 IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    if len(data) - start != int(np.prod(shape)):
        raise DataError(f"{what}: {len(data) - start} bytes of data for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(shape)


def _mnist(files: list[Path]) -> dict[str, np.ndarray]:
    by_name = {f.name: f for f in files}
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        for key, kind in (("x", "images-idx3"), ("y", "labels-idx1")):
            path = by_name[f"{prefix}-{kind}-ubyte.gz"]
            out[f"{key}_{split}"] = read_idx(gzip.decompress(path.read_bytes()), path.name)
    return out


def read_cifar10_bin(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's binary batches: records of 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32)."""
    if len(data) % 3073:
        raise DataError(f"{what}: {len(data)} bytes is not a whole number of 3073-byte records")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3073)
    x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, H, W, C)
    return np.ascontiguousarray(x), rec[:, 0].copy()


def _cifar10(archive: Path) -> dict[str, np.ndarray]:
    out = {}
    with tarfile.open(archive, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        for split, names in CIFAR10_MEMBERS.items():
            xs, ys = [], []
            for n in names:
                if n not in members:
                    raise DataError(f"'{archive}' has no {n}: not the CIFAR-10 binary release")
                x, y = read_cifar10_bin(tar.extractfile(members[n]).read(), n)
                xs.append(x)
                ys.append(y)
            out[f"x_{split}"], out[f"y_{split}"] = np.concatenate(xs), np.concatenate(ys)
        if "batches.meta.txt" in members:
            text = io.TextIOWrapper(tar.extractfile(members["batches.meta.txt"]), encoding="utf-8").read()
            out["class_names"] = np.array([c for c in text.split() if c])
    return out
