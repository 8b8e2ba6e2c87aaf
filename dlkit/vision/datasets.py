"""Image classification datasets as tensors: MNIST and CIFAR-10 files, image folders, the originals with --download (opt-in).

Everything is read in place (never copied into the project) and returned as :class:`ImageData`: ``images``
uint8 (N, C, H, W), ``labels`` int64 (N,), ``classes``. Decoding the 60,000 JPEGs of the shared
``cifar10_jpeg.npz`` takes about 15 s on one core, so the decoded arrays are cached under
``$DLKIT_HOME/cache`` (keyed by a hash of the file's content; delete the folder to drop it). A file of the wrong
format or with missing arrays, a folder without class subfolders or a class without images is one
:class:`~dlkit.core.errors.DataError` line. ``download=True`` fetches the original MNIST or CIFAR-10 files (:mod:`dlkit.vision.download`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dlkit.core.errors import DataError

DATASETS = ("mnist", "cifar10")
SPLITS = ("train", "test")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MNIST_CLASSES = [str(d) for d in range(10)]
DECODED_LIMIT = 2_000_000_000  # bytes of decoded pixels (CIFAR-10: 184 MB)


@dataclass
class ImageData:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # (C, H, W)

    def subset(self, index: torch.Tensor | np.ndarray | slice) -> "ImageData":
        return ImageData(self.images[index], self.labels[index], self.classes)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}': expected train or test")


def _open_npz(path: str | os.PathLike, what: str):
    from dlkit.core.npz import open_npz

    return open_npz(path, what)  # a regular file, capped, no pickle: one DataError line otherwise


def _arrays(npz, path, keys: list[str], what: str) -> list[np.ndarray]:
    missing = [k for k in keys if k not in npz]
    if missing:
        raise DataError(f"'{path}' is not a {what} file: missing array(s) {', '.join(missing)} "
                        f"(it holds {', '.join(npz.files[:8]) or 'nothing'})")
    return [npz[k] for k in keys]


def _labels(y: np.ndarray, n: int, k: int, path, split: str) -> torch.Tensor:
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"'{path}': {split} labels have shape {y.shape}, expected ({n},)")
    if y.dtype.kind not in "iu":
        raise DataError(f"'{path}': {split} labels must be integers, found {y.dtype}")
    if n and (y.min() < 0 or y.max() >= k):
        raise DataError(f"'{path}': {split} labels must be in 0..{k - 1} (found {int(y.min())}..{int(y.max())})")
    return torch.from_numpy(y.astype(np.int64))


def load_mnist(path: str | os.PathLike, split: str = "train") -> ImageData:
    """``mnist.npz`` (x_train uint8 (60000, 28, 28), y_train, x_test, y_test) -> (N, 1, 28, 28)."""
    _check_split(split)
    npz = _open_npz(path, "MNIST")
    x, y = _arrays(npz, path, [f"x_{split}", f"y_{split}"], "MNIST")
    if x.ndim != 3 or x.dtype != np.uint8 or min(x.shape) < 1:
        raise DataError(f"'{path}': x_{split} must be uint8 (N, H, W) with at least one image, found {x.dtype} {x.shape}")
    return ImageData(torch.from_numpy(np.ascontiguousarray(x[:, None])), _labels(y, len(x), 10, path, split),
                     list(MNIST_CLASSES))


def load_cifar10(path: str | os.PathLike, split: str = "train", cache: bool = True) -> ImageData:
    """The shared ``cifar10_jpeg.npz`` (JPEG bytes + offsets per split) -> uint8 (N, 3, 32, 32).

    The decoded array is cached in ``$DLKIT_HOME/cache`` unless ``cache`` is false."""
    _check_split(split)
    path = Path(path)
    npz = _open_npz(path, "CIFAR-10")
    if f"x_{split}" in npz.files:  # plain uint8 (N, H, W, 3) arrays, as --download writes them
        return _plain_cifar10(npz, path, split)
    buf, off, y = _arrays(npz, path, [f"{split}_jpeg", f"{split}_offsets", f"y_{split}"], "CIFAR-10 JPEG")
    classes = _class_names(npz, path) if "class_names" in npz else list(CIFAR10_CLASSES)
    if (buf.ndim != 1 or off.ndim != 1 or len(off) < 1 or off.dtype.kind not in "iu"
            or (len(off) > 1 and (np.any(np.diff(off) <= 0) or off[0] < 0 or off[-1] > len(buf)))):
        raise DataError(f"'{path}': {split}_offsets do not index {split}_jpeg (corrupt file?)")
    labels = _labels(y, len(off) - 1, len(classes), path, split)
    cache_file = _cache_dir() / f"cifar10-{split}-{content_key(path)}.npy" if cache else None
    x = _read_cache(cache_file, len(off) - 1)
    if x is None:
        x = decode_jpegs(buf, off, path, split)
        _write_cache(cache_file, x)
    return ImageData(torch.from_numpy(x), labels, classes)


def _plain_cifar10(npz, path, split: str) -> ImageData:
    x, y = _arrays(npz, path, [f"x_{split}", f"y_{split}"], "CIFAR-10")
    classes = _class_names(npz, path) if "class_names" in npz else list(CIFAR10_CLASSES)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8 or len(x) < 1:
        raise DataError(f"'{path}': x_{split} must be uint8 (N, H, W, 3) with at least one image, found {x.dtype} {x.shape}")
    labels = _labels(y, len(x), len(classes), path, split)
    return ImageData(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), labels, classes)


def _class_names(npz, path) -> list[str]:
    names = npz["class_names"]
    if names.ndim != 1 or len(names) < 2 or len(names) > 100_000 or names.dtype.kind not in "USiu":
        raise DataError(f"'{path}': class_names must list at least two class names (found shape {names.shape})")
    return [str(c) for c in names]


def content_key(path: str | os.PathLike) -> str:
    """A hash of the whole file (BLAKE2b, ~0.1 s for 60 MB): two files with one size and mtime differ here."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def decode_jpegs(buf: np.ndarray, off: np.ndarray, path, split: str, chunk: int = 2000) -> np.ndarray:
    """Concatenated JPEG files -> uint8 (N, 3, H, W); decoded in chunks so a bad image names its index."""
    from dlkit.vision.image import ImageError, open_image

    n = len(off) - 1
    out = None
    for start in range(0, n, chunk):
        for i in range(start, min(n, start + chunk)):
            try:
                img = open_image(buf[off[i]:off[i + 1]].tobytes(), "RGB")
            except ImageError as e:
                raise DataError(f"'{path}': {split} image {i} cannot be decoded ({e})") from None
            a = np.asarray(img)
            if out is None:
                if n * 3 * a.shape[0] * a.shape[1] > DECODED_LIMIT:
                    raise DataError(f"'{path}': {n} {split} images of {a.shape[1]}x{a.shape[0]} would take "
                                    f"{n * 3 * a.shape[0] * a.shape[1] / 1e9:.1f} GB decoded; dlkit decodes at most "
                                    f"{DECODED_LIMIT / 1e9:.0f} GB (use an image folder for larger images)")
                out = np.empty((n, 3, a.shape[0], a.shape[1]), dtype=np.uint8)
            if a.shape[:2] != out.shape[2:]:
                raise DataError(f"'{path}': {split} image {i} is {a.shape[1]}x{a.shape[0]}, the others "
                                f"{out.shape[3]}x{out.shape[2]}")
            out[i] = a.transpose(2, 0, 1)
    return out if out is not None else np.zeros((0, 3, 32, 32), dtype=np.uint8)


def _cache_dir() -> Path:
    from dlkit.core.zoo import home_dir

    return home_dir() / "cache"


def _read_cache(file: Path | None, n: int) -> np.ndarray | None:
    if file is None or not file.is_file():
        return None
    try:
        x = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None
    return x if x.dtype == np.uint8 and x.ndim == 4 and len(x) == n else None


def _write_cache(file: Path | None, x: np.ndarray) -> None:
    if file is None:
        return
    from dlkit.core.atomic import atomic_write
    from dlkit.core.errors import OutputError

    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(file, lambda f: np.save(f, x, allow_pickle=False))
    except (OSError, OutputError):
        pass  # a cache that cannot be written only costs time


def load_image_folder(path: str | os.PathLike, size: int | tuple[int, int] | None = None, mode: str = "RGB",
                      warn: Callable[[str], None] | None = None) -> ImageData:
    """``path/<class>/*.jpg|png...`` -> ImageData, classes sorted by name. Images are resized to ``size``
    (an int or (H, W)); without ``size`` they must all have one size. Unreadable images are skipped with a
    warning (``warn``); a folder without class subfolders or a class without images is a DataError."""
    from dlkit.vision.image import IMAGE_SUFFIXES, ImageError, open_image

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist" if not root.exists() else f"'{root}' is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"image folder '{root}' has no class subfolders (expected {root}/<class>/<image>)")
    hw = (size, size) if isinstance(size, int) else tuple(size) if size else None
    images, labels, decoded = [], [], 0
    for k, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        good = 0
        for f in files:
            try:
                img = open_image(f, mode)
            except ImageError as e:
                if warn:
                    warn(str(e))
                continue
            if hw is not None and img.size != (hw[1], hw[0]):
                img = img.resize((hw[1], hw[0]), resample=3)  # bicubic
            a = np.asarray(img)
            a = a[:, :, None] if a.ndim == 2 else a
            if images and a.shape != images[0].shape:
                raise DataError(f"'{f}' is {a.shape[1]}x{a.shape[0]} but earlier images are "
                                f"{images[0].shape[1]}x{images[0].shape[0]}: give an image size to resize them")
            images.append(a)
            labels.append(k)
            good += 1
            decoded += a.nbytes
            if decoded > DECODED_LIMIT:
                raise DataError(f"the images of '{root}' take more than {DECODED_LIMIT / 1e9:.0f} GB decoded (at "
                                f"{a.shape[1]}x{a.shape[0]}); give a smaller image size to resize them")
        if good == 0:
            raise DataError(f"class '{name}' in '{root}' has no readable images")
    x = np.stack(images).transpose(0, 3, 1, 2)
    return ImageData(torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(labels, dtype=torch.int64), classes)


def load_dataset(name: str | None, split: str = "train", data: str | os.PathLike | None = None,
                 download: bool = False, size: int | None = None, warn: Callable[[str], None] | None = None) -> ImageData:
    """``name`` mnist | cifar10 read from ``data`` (an .npz), or an image folder ``data`` (``data/train/<class>``
    and ``data/test/<class>``, or ``data/<class>`` for the train split only); mnist | cifar10 fetched into $DLKIT_HOME/data with ``download``."""
    _check_split(split)
    if name is not None and name not in DATASETS and name != "folder":
        raise DataError(f"unknown dataset '{name}': expected mnist, cifar10 or an image folder given with --data")
    if data is not None:
        data = Path(data)
        if data.is_dir():
            sub = data / split
            if (data / "train").is_dir():
                if not sub.is_dir():
                    raise DataError(f"image folder '{data}' has no '{split}' subfolder")
                return load_image_folder(sub, size, warn=warn)
            if split == "test":
                raise DataError(f"image folder '{data}' has no test/ subfolder")
            return load_image_folder(data, size, warn=warn)
        if name == "mnist":
            return load_mnist(data, split)
        if name == "cifar10":
            return load_cifar10(data, split)
        raise DataError(f"--data '{data}' is a file: name the dataset (mnist or cifar10) or give an image folder")
    if name in DATASETS and download:  # the original files, SHA-256 checked, into $DLKIT_HOME/data
        from dlkit.vision.download import dataset_npz

        path = dataset_npz(name)
        return load_mnist(path, split) if name == "mnist" else load_cifar10(path, split)
    if name in DATASETS:
        raise DataError(f"give --data PATH (e.g. {name}{'.npz' if name == 'mnist' else '_jpeg.npz'}) "
                        "or --download to fetch it into $DLKIT_HOME/data")
    raise DataError("give --data: an .npz file or an image folder")
