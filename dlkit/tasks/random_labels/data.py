"""The data of the random-labels experiment: datasets, preprocessing and the six corruptions.

Zhang, Bengio, Hardt, Recht, Vinyals, "Understanding deep learning requires rethinking generalization",
ICLR 2017, section 2 (the corruptions) and appendix A (CIFAR-10 centre-cropped to 28x28; per-image
whitening is done by the saved classifier, see :mod:`dlkit.vision.classifier`):

* ``true``: the original data.
* ``partial:P``: independently with probability P, an image's label is replaced by a uniformly random class
  (which may be the true one, so about P*(K-1)/K of the labels change).
* ``random``: all labels replaced by uniformly random classes (``partial:1``).
* ``shuffled-pixels``: one random permutation of the pixel positions, the same for every training and test image.
* ``random-pixels``: a different random permutation for each image (training and test).
* ``gaussian``: every image replaced by Gaussian noise with the per-channel mean and variance of the training
  images (training and test).

Corruptions are drawn once from a generator seeded by (seed, corruption), so a run is reproducible and the
same corruption gets the same draw whatever else is in the list. Test accuracy is always measured against
the true test labels.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from dlkit.core.errors import UsageError
from dlkit.vision.datasets import ImageData

KINDS = ("true", "random", "partial", "shuffled-pixels", "random-pixels", "gaussian")
ALL = ["true", "partial:0.2", "partial:0.4", "partial:0.6", "partial:0.8", "random", "shuffled-pixels",
       "random-pixels", "gaussian"]


@dataclass(frozen=True)
class Corruption:
    kind: str  # one of KINDS
    level: float = 0.0  # label corruption level in [0, 1] (true 0, random 1, partial P); pixels: 0

    @property
    def name(self) -> str:
        return f"partial:{self.level:g}" if self.kind == "partial" else self.kind

    @property
    def label_level(self) -> float | None:
        """The label-corruption level for Fig. 1b/1c (None for pixel corruptions)."""
        return {"true": 0.0, "random": 1.0, "partial": self.level}.get(self.kind)

    @property
    def slug(self) -> str:
        return self.name.replace(":", "-")


def parse_corruptions(spec: str) -> list[Corruption]:
    """``true,random,partial:0.5`` or ``all`` -> corruptions (duplicates removed, order kept)."""
    items = ALL if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise UsageError("--corruption is empty: give e.g. true,random or all")
    out: list[Corruption] = []
    for item in items:
        kind, _, arg = item.partition(":")
        if kind == "partial":
            try:
                level = float(arg)
            except ValueError:
                raise UsageError(f"--corruption {item}: expected partial:P with P a number in [0, 1]") from None
            if not 0.0 <= level <= 1.0:
                raise UsageError(f"--corruption {item}: the corruption level must be in [0, 1]")
            c = Corruption("partial", level)
        elif kind in KINDS and not arg:
            c = Corruption(kind, 1.0 if kind == "random" else 0.0)
        else:
            raise UsageError(f"unknown corruption '{item}': expected true, random, partial:P, shuffled-pixels, "
                             "random-pixels, gaussian or all")
        if c not in out:
            out.append(c)
    return out


def generator_for(seed: int, corruption: Corruption) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(corruption.name.encode()))


def corrupt(train: ImageData, test: ImageData, c: Corruption, seed: int) -> tuple[ImageData, ImageData]:
    """The training and test sets of one run (the inputs are not modified). Test labels stay true."""
    g = generator_for(seed, c)
    k = len(train.classes)
    x, y, tx = train.images, train.labels, test.images
    if c.kind in ("partial", "random"):
        flip = torch.rand(len(y), generator=g) < c.level
        y = torch.where(flip, torch.randint(0, k, (len(y),), generator=g), y)
    elif c.kind == "shuffled-pixels":
        perm = torch.randperm(x.shape[2] * x.shape[3], generator=g)
        x, tx = permute_pixels(x, perm), permute_pixels(tx, perm)
    elif c.kind == "random-pixels":
        x, tx = permute_each(x, g), permute_each(tx, g)
    elif c.kind == "gaussian":
        mean, std = channel_moments(x)
        x, tx = gaussian_like(x.shape, mean, std, g), gaussian_like(tx.shape, mean, std, g)
    return ImageData(x, y, train.classes), ImageData(tx, test.labels, test.classes)


def permute_pixels(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Apply one permutation of the H*W pixel positions (channels move together) to every image."""
    B, C, H, W = x.shape
    return x.reshape(B, C, H * W)[:, :, perm].reshape(B, C, H, W)


def permute_each(x: torch.Tensor, g: torch.Generator, chunk: int = 4096) -> torch.Tensor:
    """A different random permutation of the pixel positions for each image."""
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    flat, dst = x.reshape(B, C, H * W), out.view(B, C, H * W)
    for i in range(0, B, chunk):
        n = min(chunk, B - i)
        perms = torch.argsort(torch.rand(n, H * W, generator=g), dim=1)  # (n, H*W): one permutation per image
        dst[i:i + n] = flat[i:i + n].gather(2, perms[:, None, :].expand(n, C, H * W))
    return out


def channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, on the [0, 1] scale, shape (C,)."""
    sums = torch.zeros(x.shape[1], dtype=torch.float64)
    sq = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, x.shape[0], 4096):
        part = x[i:i + 4096].double() / 255.0
        sums += part.sum(dim=(0, 2, 3))
        sq += (part * part).sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = sums / n
    return mean.float(), (sq / n - mean * mean).clamp_min(0).sqrt().float()


def gaussian_like(shape, mean: torch.Tensor, std: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Gaussian images (float16 storage, [0, 1] scale, not clipped) with per-channel ``mean`` and ``std``."""
    z = torch.randn(shape, generator=g)
    return (z * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)).half()


def prepare(data: ImageData, crop: int | None) -> ImageData:
    """Centre-crop to ``crop`` x ``crop`` (Zhang et al.: CIFAR-10 32x32 -> 28x28)."""
    if crop is None or crop >= data.images.shape[-1]:
        return data
    H, W = data.images.shape[-2:]
    if crop > H:
        raise UsageError(f"--crop {crop} is larger than the {H}x{W} images")
    top, left = (H - crop) // 2, (W - crop) // 2
    return ImageData(data.images[:, :, top:top + crop, left:left + crop].contiguous(), data.labels, data.classes)


def take_subset(data: ImageData, n: int | None, seed: int, what: str = "--subset") -> ImageData:
    """A seeded random subset of ``n`` images (all of them when n is None)."""
    if n is None:
        return data
    if n < 1:
        raise UsageError(f"{what} must be at least 1 (got {n})")
    if n > len(data):
        raise UsageError(f"{what} {n} is larger than the dataset ({len(data)} images)")
    keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return data.subset(keep)
