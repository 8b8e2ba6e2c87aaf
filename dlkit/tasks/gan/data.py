"""GAN training data: the two toys, image datasets (through ``dlkit.vision.datasets``), and toy metrics.

* ``gaussian``: 1-D N(4, 1.25), the target of Dev Nag's "Generative Adversarial Networks (GANs) in 50 lines
  of code (PyTorch)" (2017), the post the lecture cites.
* ``ring``: a mixture of 8 Gaussians (std 0.02) evenly spaced on a circle of radius 2, the mode-collapse
  benchmark of Metz et al. 2017 (Unrolled GANs); "high quality" = within 3 std of a mode (Srivastava et al.
  2017, VEEGAN), a mode is covered when it holds at least 1/4 of its fair share (N/8) of high-quality samples.
* Images are uint8 (N, C, H, W) in memory and become [-1, 1] floats per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pathlib import Path

import numpy as np
import torch

from dlkit.core.errors import DataError, UsageError

TOYS = ("gaussian", "ring")


def default_arch(arch: str | None, dataset: str) -> str:
    """--arch, or what a run on ``dataset`` uses without it: the toys' MLP, dcgan for images."""
    return arch or ("mlp" if dataset in TOYS else "dcgan")

GAUSSIAN_MEAN, GAUSSIAN_STD = 4.0, 1.25
RING_MODES, RING_RADIUS, RING_STD = 8, 2.0, 0.02
MIN_IMAGES = 2


@dataclass
class GANData:
    """What a run trains on: toy name, or uint8 images (N, C, H, W) with labels and class names."""

    name: str
    images: torch.Tensor | None = None  # uint8 (N, C, H, W)
    labels: torch.Tensor | None = None  # int64 (N,)
    classes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def is_toy(self) -> bool:
        return self.name in TOYS

    @property
    def shape(self) -> tuple[int, ...]:
        if self.name == "gaussian":
            return (1,)
        if self.name == "ring":
            return (2,)
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return 0 if self.images is None else int(self.images.shape[0])


def ring_centres() -> torch.Tensor:
    """(8, 2) mode centres on the circle of radius 2."""
    a = torch.arange(RING_MODES, dtype=torch.float64) * (2 * math.pi / RING_MODES)
    return (RING_RADIUS * torch.stack([a.cos(), a.sin()], 1)).float()


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n real samples of a toy: (n, 1) for gaussian, (n, 2) for ring."""
    if name == "gaussian":
        return GAUSSIAN_MEAN + GAUSSIAN_STD * torch.randn(n, 1, generator=generator)
    if name == "ring":
        idx = torch.randint(0, RING_MODES, (n,), generator=generator)
        return ring_centres()[idx] + RING_STD * torch.randn(n, 2, generator=generator)
    raise UsageError(f"unknown toy '{name}'; expected one of {', '.join(TOYS)}")


def to_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [-1, 1] (the generator's tanh range)."""
    return images_uint8.float().div_(127.5).sub_(1.0)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> [0, 1] float (for grids and files)."""
    return ((x.float() + 1.0) / 2.0).clamp_(0.0, 1.0)


def load_data(name: str, data: str | None = None, image_size: int | None = None, channels: int | None = None,
              download: bool = False, split: str = "train") -> GANData:
    """Toys by name; ``mnist``/``cifar10`` from ``data`` (the shared npz files); ``folder`` (or any folder
    given as ``data``); ``mnist``/``cifar10`` are fetched into $DLKIT_HOME/data only with ``download``."""
    if name in TOYS:
        return GANData(name)
    if data is not None and not Path(data).exists():
        raise DataError(f"--data '{data}' does not exist", exit_code=2)
    if name == "folder" or (data is not None and Path(data).is_dir() and name not in ("mnist", "cifar10")):
        if data is None:
            raise UsageError("--dataset folder needs --data FOLDER")
        d = _load_folder(data, image_size, channels)
    else:
        if data is None and not download and name not in ("mnist", "cifar10"):
            raise UsageError(f"--dataset {name}: expected gaussian, ring, mnist, cifar10 or folder")
        from dlkit.vision import datasets

        d = datasets.load_dataset(name, split, data=data, download=download, size=image_size)
        d = GANData(name, d.images, d.labels.long(), list(d.classes))
        if image_size and tuple(d.images.shape[2:]) != (image_size, image_size):
            _check_decoded(len(d), d.images.shape[1], image_size)
            d.notes.append(f"{name} resized from {d.images.shape[2]}x{d.images.shape[3]} to {image_size}x{image_size}")
            d.images = _resize(d.images, image_size)
    if channels is not None and d.images.shape[1] != channels:
        d.images = _convert_channels(d.images, channels)
        d.notes.append(f"converted to {channels} channel(s)")
    if len(d) < MIN_IMAGES:
        where = f" in '{data}'" if data else ""
        raise DataError(f"found {len(d)} image{'s' if len(d) != 1 else ''}{where}; a GAN needs at least "
                        f"{MIN_IMAGES} (thousands to learn anything)")
    return d


DECODED_LIMIT = 2_000_000_000  # bytes of decoded training images kept in memory


def _check_decoded(n: int, c: int, side: int) -> None:
    from dlkit.core.limits import product_at_most

    product_at_most(f"{n:,} images at --image-size {side}", n * c * side * side, DECODED_LIMIT,
                    "the training images are kept decoded in memory; use a smaller --image-size or fewer images",
                    unit="bytes")


def _load_folder(path: str, image_size: int | None, channels: int | None) -> GANData:
    """Class subfolders (labels for --conditional) or a flat folder of images. Mixed sizes are resized to
    ``image_size`` (default 64, the largest DCGAN size) and mixed modes converted; both are noted for the user."""
    from PIL import Image

    from dlkit.vision.image import IMAGE_SUFFIXES, ImageError, open_image

    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"image folder '{root}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    sizes, modes = set(), set()
    for f in files:  # headers only: sizes and modes for the notes
        try:
            with Image.open(f) as im:
                sizes.add(im.size)
                modes.add(im.mode)
        except (OSError, ValueError, Image.DecompressionBombError):
            pass
    side = image_size or 64
    _check_decoded(len(files), 3, side)
    grey = modes and modes <= {"L", "1", "I;16", "I"}
    mode = "L" if channels == 1 or (channels is None and grey) else "RGB"
    notes = []
    if sizes - {(side, side)}:
        notes.append(f"{len(files)} images of {len(sizes)} size(s) resized to {side}x{side} (--image-size)")
    if modes - {mode}:
        notes.append(f"images in mode(s) {', '.join(sorted(modes - {mode}))} converted to {mode}")
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if subdirs and all(f.parent != root for f in files):
        from dlkit.vision import datasets

        d = datasets.load_image_folder(root, size=side, mode=mode, warn=notes.append)
        return GANData("folder", d.images, d.labels.long(), list(d.classes), notes)
    images = []
    for f in files:  # a flat folder: no classes
        try:
            img = open_image(f, mode)
        except ImageError as e:
            notes.append(f"skipped: {e}")
            continue
        if img.size != (side, side):
            img = img.resize((side, side), resample=Image.BICUBIC)
        a = np.asarray(img)
        images.append(a[:, :, None] if a.ndim == 2 else a)
    if not images:
        raise DataError(f"image folder '{root}' holds no readable images")
    x = torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))
    return GANData("folder", x, torch.zeros(len(x), dtype=torch.long), [], notes)


def _resize(images: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, C, side, side), antialiased bilinear, in chunks."""
    import torch.nn.functional as F

    out = [F.interpolate(images[i:i + 4096].float(), size=(side, side), mode="bilinear", antialias=True,
                         align_corners=False).round_().clamp_(0, 255).to(torch.uint8) for i in range(0, len(images), 4096)]
    return torch.cat(out)


def _convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if channels == 3 and images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and images.shape[1] == 3:  # ITU-R 601-2 luma, as PIL's convert("L")
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise DataError(f"cannot convert {images.shape[1]}-channel images to {channels} channel(s)")


# ---------------------------------------------------------------- toy metrics
def gaussian_metrics(x: torch.Tensor, bins: int = 50) -> dict[str, float]:
    """Mean, std, KL(real || generated) over a histogram on [mean - 4 std, mean + 4 std] (add-one smoothing),
    and the 1-D Wasserstein-1 distance to the exact N(4, 1.25) (through its quantile function)."""
    from scipy.stats import norm

    x = x.detach().double().flatten().cpu().numpy()
    lo, hi = GAUSSIAN_MEAN - 4 * GAUSSIAN_STD, GAUSSIAN_MEAN + 4 * GAUSSIAN_STD
    edges = np.linspace(lo, hi, bins + 1)
    p = np.diff(norm.cdf(edges, GAUSSIAN_MEAN, GAUSSIAN_STD))
    q = np.histogram(np.clip(x, lo, hi), edges)[0] + 1.0
    p, q = p / p.sum(), q / q.sum()
    xs = np.sort(x)
    probs = (np.arange(len(xs)) + 0.5) / len(xs)
    w1 = float(np.mean(np.abs(xs - norm.ppf(probs, GAUSSIAN_MEAN, GAUSSIAN_STD))))
    return {"mean": float(x.mean()), "std": float(x.std()), "kl": float(np.sum(p * np.log(p / q))), "w1": w1}


def ring_metrics(x: torch.Tensor) -> dict[str, float]:
    """Modes covered (of 8) and the share of high-quality samples (within 3 std of the nearest mode)."""
    x = x.detach().float().cpu()
    dist = torch.cdist(x, ring_centres())  # (N, 8)
    d_min, nearest = dist.min(1)
    good = d_min <= 3 * RING_STD
    counts = torch.bincount(nearest[good], minlength=RING_MODES)
    fair = len(x) / RING_MODES
    covered = int((counts >= 0.25 * fair).sum())
    return {"modes": covered, "high_quality": float(good.float().mean())}


def toy_metrics(name: str, x: torch.Tensor) -> dict[str, float]:
    return gaussian_metrics(x) if name == "gaussian" else ring_metrics(x)
