"""Inputs for attacks: one photo brought to the victim's size, a test set mapped to its classes, and the
physical-world transformations (JPEG, resizing, blur, noise) of Kurakin et al. 2016."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dlkit.core.errors import DataError, UsageError
from dlkit.core.io import quote
from dlkit.tasks.adversarial.model import Victim
from dlkit.tasks.adversarial.spec import Transform

Note = Callable[[str], None]


def _mode(channels: int) -> str:
    if channels not in (1, 3):
        raise DataError(f"the model takes {channels}-channel images; only 1 (grey) or 3 (RGB) can be attacked")
    return "L" if channels == 1 else "RGB"


def fit_image(img, victim: Victim, note: Note | None = None, label: str = "image"):
    """A Pillow image -> the victim's mode and size: shorter side resized to ``victim.resize`` (or straight to
    the input size when that is 0 or the image is already square), then the centre cropped. Notes what changed."""
    from PIL import Image

    from dlkit.vision.image import convert

    c, h, w = victim.input_size
    mode = _mode(c)
    if img.mode != mode:
        if note:
            note(f"{label}: converted from {img.mode} to {mode} for the model")
        img = convert(img, mode)
    if img.size == (w, h):
        return img
    W, H = img.size
    short = victim.resize or min(h, w)
    if victim.resize == 0 and abs(W / H - w / h) < 1e-6:
        img = img.resize((w, h), Image.BICUBIC, reducing_gap=None)
    else:
        scale = short / min(W, H)
        img = img.resize((max(w, round(W * scale)), max(h, round(H * scale))), Image.BILINEAR, reducing_gap=None)
        left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
        img = img.crop((left, top, left + w, top + h))
    if note:
        note(f"{label}: {W}x{H} resized and centre-cropped to the model's {w}x{h}")
    return img


def load_photo(path: str | Path, victim: Victim, note: Note | None = None) -> tuple[torch.Tensor, dict]:
    """One image file -> ((1, C, H, W) float in [0, 1] at the victim's size, info about what was done)."""
    from dlkit.vision.image import open_image, to_tensor

    img = open_image(path, mode=None)
    original = img.size
    img = fit_image(img, victim, note, label=Path(path).name)
    return to_tensor(img).unsqueeze(0), {"original_size": list(original)}


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, rounded to the nearest level (what an 8-bit image file stores)."""
    return x.detach().clamp(0, 1).mul(255).round_().to(torch.uint8)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats rounded to the 256 levels of an 8-bit file, as floats."""
    return to_uint8(x).float().div_(255)


# ---------------------------------------------------------------- datasets
def load_test_set(dataset: str | None, data: str | Path | None, victim: Victim, limit: int | None = None,
                  note: Note | None = None, per_class: int | None = None):
    """The test split of mnist / cifar10 (``data``: the .npz) or an image folder, the first ``limit`` examples
    (or the first ``per_class`` of each class), converted to the victim's channels and size (with a note),
    labels mapped to the victim's classes by name."""
    from dlkit.vision.datasets import load_dataset, load_image_folder

    c, h, w = victim.input_size
    folder = data is not None and Path(data).is_dir()
    if data is not None and not Path(data).exists():
        raise DataError(f"--data '{data}' does not exist")
    if folder:
        root = Path(data)
        sub = root / "test" if (root / "test").is_dir() else root
        ds = load_image_folder(sub, size=(h, w), mode=_mode(c), warn=note)
    else:
        ds = load_dataset(dataset, "test", data=data)
    x, y = select(ds.images, ds.labels, limit, per_class)
    if limit is not None and per_class is None and len(y) > 1 and bool((y == y[0]).all()) and len(ds.labels) > len(y):
        if note:
            note(f"the first {len(y)} test examples are all of class '{ds.classes[int(y[0])]}' (the file is sorted "
                 "by class); --per-class N takes the first N of each class")
    labels = _map_labels(y, ds.classes, victim.classes)  # before any conversion: a wrong set fails at once
    images = _fit_batch(x, victim, note)
    return images, labels, list(ds.classes)


def select(images: torch.Tensor, labels: torch.Tensor, limit: int | None = None, per_class: int | None = None):
    """The first ``per_class`` examples of each class (in file order), then the first ``limit`` of those."""
    if per_class is not None:
        keep = torch.zeros_like(labels, dtype=torch.bool)
        for k in labels.unique():
            keep[(labels == k).nonzero().flatten()[:per_class]] = True
        images, labels = images[keep], labels[keep]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def _fit_batch(images: torch.Tensor, victim: Victim, note: Note | None) -> torch.Tensor:
    """(N, C, H, W) uint8 -> the victim's channels and size (grey <-> RGB, bilinear resize), noting it."""
    import torch.nn.functional as F

    c, h, w = victim.input_size
    n, ci, hi, wi = images.shape
    if ci != c:
        if c == 3 and ci == 1:
            images = images.expand(n, 3, hi, wi)
        elif c == 1 and ci == 3:
            rgb = images.float()  # ITU-R 601 luma, as Pillow's convert("L")
            images = (0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]).round().clamp(0, 255).to(torch.uint8)
        else:
            raise DataError(f"the images have {ci} channels; the model takes {c}")
        if note:
            note(f"images converted from {ci} to {c} channel(s) for the model")
    if (hi, wi) != (h, w):
        images = F.interpolate(images.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        images = images.round().clamp(0, 255).to(torch.uint8)
        if note:
            note(f"images resized from {wi}x{hi} to the model's {w}x{h}")
    return images.contiguous()


def _map_labels(labels: torch.Tensor, data_classes: list[str], model_classes: list[str]) -> torch.Tensor:
    """Dataset label indices -> the model's indices, by class name (case-insensitive; never by position: a
    folder "10" is not the model's tenth class). Every dataset class must be one of the model's classes."""
    if list(data_classes) == list(model_classes):
        return labels
    lookup = {name.strip().lower(): i for i, name in enumerate(model_classes)}
    missing = [n for n in data_classes if n.strip().lower() not in lookup]
    if missing:
        shown = ", ".join(f"'{quote(n, 20)}'" for n in missing[:3]) + (", ..." if len(missing) > 3 else "")
        theirs = ", ".join(quote(n, 20) for n in model_classes[:5]) + (", ..." if len(model_classes) > 5 else "")
        raise DataError(f"the test set's classes {shown} are not classes of the model ({theirs}); attack a model "
                        "trained on these classes (image folders are matched to the model's class names)")
    table = torch.tensor([lookup[n.strip().lower()] for n in data_classes], dtype=torch.int64)
    return table[labels]


# ---------------------------------------------------------------- targets
def resolve_target(text: str, classes: list[str]) -> int:
    """A class index (``368``) or name (``gibbon``: exact, case-insensitive, else a unique part of a name)."""
    s = str(text).strip()
    if s.lstrip("-").isdigit():
        i = int(s)
        if not 0 <= i < len(classes):
            raise UsageError(f"--target {s}: index out of range; the model has classes 0-{len(classes) - 1}")
        return i
    low = s.lower()
    exact = [i for i, c in enumerate(classes) if c.lower() == low]
    if exact:
        return exact[0]
    part = [i for i, c in enumerate(classes) if low and low in c.lower()]
    if len(part) == 1:
        return part[0]
    if part:
        names = ", ".join(f"'{classes[i]}'" for i in part[:5])
        raise UsageError(f"--target '{s}' matches several classes ({names}{', ...' if len(part) > 5 else ''}); "
                         "give the full name or an index")
    raise UsageError(f"--target '{s}': unknown class; e.g. {', '.join(classes[:5])} (or an index 0-{len(classes) - 1})")


# ---------------------------------------------------------------- physical-world transformations
def apply_transforms(x: torch.Tensor, transforms: list[Transform], seed: int = 0) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> the same after each transformation in order, through 8-bit images as a camera
    or a file would: ``jpeg:Q`` re-encodes, ``resize:F`` scales by F and back, ``blur:R`` Gaussian-blurs with
    radius R, ``noise:S`` adds Gaussian noise of std S (0-255 units)."""
    if not transforms:
        return x
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    arr = to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
    out = []
    for a in arr:
        img = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)
        for t in transforms:
            if t.kind == "jpeg":
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=int(t.value))
                img = Image.open(io.BytesIO(buf.getvalue()))
                img.load()
            elif t.kind == "resize":
                W, H = img.size
                small = img.resize((max(1, round(W * t.value)), max(1, round(H * t.value))), Image.BILINEAR)
                img = small.resize((W, H), Image.BILINEAR)
            elif t.kind == "blur":
                img = img.filter(ImageFilter.GaussianBlur(t.value))
            elif t.kind == "noise":
                noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, t.value, size=np.asarray(img).shape)
                img = Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
        b = np.asarray(img)
        out.append(b[..., None] if b.ndim == 2 else b)
    t = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255)
    return t.to(x.device)


# ---------------------------------------------------------------- --save-adv
class AdvWriter:
    """Collects adversarial batches: ``FILE.npz`` gets one uint8 array (N, C, H, W) per method and eps
    (``fgsm_eps8``) plus ``labels``; a folder gets ``DIR/<method>/eps<k>/<index>.png`` as they come."""

    def __init__(self, path: str | Path, labels: torch.Tensor):
        self.path = Path(path)
        self.npz = self.path.suffix.lower() == ".npz"
        self.labels = labels
        self.arrays: dict[str, list[np.ndarray]] = {}
        self.count = 0

    @staticmethod
    def key(method: str, eps: float) -> str:
        px = eps * 255
        return f"{method}_eps{int(round(px)) if abs(px - round(px)) < 1e-6 else f'{eps:.4g}'}"

    def __call__(self, method: str, eps: float, adv: torch.Tensor, offset: int) -> None:
        if eps == 0:
            return
        key = self.key(method, eps)
        a = adv.numpy()
        if self.npz:
            self.arrays.setdefault(key, []).append(a)
        else:
            from dlkit.vision.image import save_image

            folder = self.path / method / key.split("_", 1)[1]
            for i, img in enumerate(a):
                save_image(img.transpose(1, 2, 0), folder / f"{offset + i:05d}.png")
        self.count += len(a)

    def close(self) -> Path:
        if self.npz:
            from dlkit.core.atomic import atomic_write

            arrays = {k: np.concatenate(v) for k, v in self.arrays.items()}
            arrays["labels"] = self.labels.numpy()
            atomic_write(self.path, lambda f: np.savez_compressed(f, **arrays))
        return self.path


# ---------------------------------------------------------------- adv-train
def training_data(cfg, report):
    """(train, test) :class:`~dlkit.vision.datasets.ImageData` for ``adv-train``: the dataset's splits (an image
    folder without test/ holds out a sixth), each cut to ``cfg.subset`` / ``cfg.test_subset`` images drawn
    with the seed."""
    from dlkit.core.errors import DataError
    from dlkit.vision.datasets import load_dataset

    if cfg.data is None:
        raise UsageError("give --data PATH (mnist.npz, cifar10_jpeg.npz or an image folder)")
    if not Path(cfg.data).exists():
        raise DataError(f"--data '{cfg.data}' does not exist")
    train = load_dataset(cfg.dataset, "train", cfg.data, warn=report.warn)
    try:
        test = load_dataset(cfg.dataset, "test", cfg.data, warn=report.warn)
    except DataError:
        if not Path(cfg.data).is_dir():
            raise
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
        n_test = max(1, len(train) // 6)
        test, train = train.subset(perm[:n_test]), train.subset(perm[n_test:])
        report.info(f"{cfg.data} has no test/ folder: holding out {n_test} images as the test set")
    return _cut(train, cfg.subset, cfg.seed, "--subset"), _cut(test, cfg.test_subset, cfg.seed + 1, "--test-subset")


def _cut(ds, n: int | None, seed: int, what: str):
    if n is None or n >= len(ds):
        return ds
    if n < 1:
        raise UsageError(f"{what} must be at least 1")
    return ds.subset(torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n])
