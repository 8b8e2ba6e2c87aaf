"""HR images from a folder or a tar, LR made once with MATLAB bicubic, random aligned patches.

LR images are made from whole (mod-cropped) HR images once, as the literature's benchmarks are, then
aligned LR/HR patch pairs are cut with flips and 90-degree rotations. The bicubic kernel is symmetric, so
flipping or transposing the pair is the same as downsampling the flipped HR patch. Batches come from a
generator seeded by (seed, rank, step), which makes interrupted + resumed runs draw the same batches.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dlkit.core.errors import DataError
from dlkit.core.imaging import imresize, modcrop

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _decode(data: bytes, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise DataError(f"image '{name}' is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return to_rgb_uint8(im)
    except UnidentifiedImageError:
        raise DataError(f"'{name}' is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"image '{name}' is damaged or truncated: {e}") from None


def to_rgb_uint8(im) -> np.ndarray:
    """Any Pillow image (L, P, CMYK, I;16, RGBA...) as (H, W, 3) uint8 RGB; 16-bit is scaled, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 or im.mode.startswith("I;16") else 255.0
        a = np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_hr_images(src: str | Path, warn: Callable[[str], None] | None = None, min_size: int = 0) -> list[tuple[str, np.ndarray]]:
    """``(name, HR uint8 RGB)`` for every image in a folder (recursive) or a .tar; bad files are warned and skipped."""
    src = Path(src)
    if not src.exists():
        raise DataError(f"training data '{src}' does not exist")
    items: list[tuple[str, bytes]] = []
    if src.is_dir():
        for f in sorted(src.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                items.append((str(f), f.read_bytes()))
    elif tarfile.is_tarfile(src):
        with tarfile.open(src) as tar:
            for m in sorted(tar.getmembers(), key=lambda m: m.name):
                if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES:
                    items.append((m.name, tar.extractfile(m).read()))
    else:
        raise DataError(f"training data '{src}' is neither a folder nor a tar file")
    out = []
    for name, data in items:
        try:
            img = _decode(data, name)
        except DataError as e:
            if warn:
                warn(f"skipped: {e}")
            continue
        if min(img.shape[:2]) < min_size:
            if warn:
                warn(f"skipped: '{name}' is smaller than {min_size} px")
            continue
        out.append((name, img))
    if not out:
        raise DataError(f"'{src}' holds no usable images")
    return out


@dataclass
class Pair:
    name: str
    lr: np.ndarray  # (h, w, 3) uint8
    hr: np.ndarray  # (h*s, w*s, 3) uint8


def make_pairs(images: list[tuple[str, np.ndarray]], scale: int) -> list[Pair]:
    """Mod-crop each HR image and make its LR with MATLAB-compatible bicubic (antialiased)."""
    pairs = []
    for name, hr in images:
        hr = modcrop(hr, scale)
        pairs.append(Pair(name, imresize(hr, 1 / scale), hr))
    return pairs


class PatchSampler:
    """Random aligned (LR, HR) patches; ``batch(step)`` depends only on (seed, rank, step)."""

    def __init__(self, pairs: list[Pair], scale: int, patch: int, batch_size: int, seed: int = 0, rank: int = 0,
                 augment: bool = True):
        self.pairs = [p for p in pairs if min(p.lr.shape[:2]) >= patch]
        if not self.pairs:
            raise DataError(f"no training image is at least {patch * scale} px on its short side; use a smaller --patch")
        self.scale, self.patch, self.batch_size = scale, patch, batch_size
        self.seed, self.rank, self.augment = seed, rank, augment

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, p, p) LR and (B, 3, p*s, p*s) HR, float in [0, 1]."""
        rng = np.random.default_rng([self.seed, self.rank, step])
        s, p = self.scale, self.patch
        lrs, hrs = [], []
        for _ in range(self.batch_size):
            pair = self.pairs[rng.integers(len(self.pairs))]
            h, w = pair.lr.shape[:2]
            y, x = rng.integers(h - p + 1), rng.integers(w - p + 1)
            lr = pair.lr[y : y + p, x : x + p]
            hr = pair.hr[y * s : (y + p) * s, x * s : (x + p) * s]
            if self.augment:
                flip_h, flip_v, rot = rng.integers(2, size=3)
                if flip_h:
                    lr, hr = lr[:, ::-1], hr[:, ::-1]
                if flip_v:
                    lr, hr = lr[::-1], hr[::-1]
                if rot:
                    lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
            lrs.append(np.ascontiguousarray(lr))
            hrs.append(np.ascontiguousarray(hr))
        return to_tensor(np.stack(lrs)), to_tensor(np.stack(hrs))


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) or (H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1]."""
    if a.ndim == 3:
        a = a[None]
    a = np.ascontiguousarray(a) if a.flags.writeable else np.array(a)
    return torch.from_numpy(a).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) float -> (H, W, 3) uint8, clamped and rounded (results are measured quantised)."""
    if t.dim() == 4:
        t = t[0]
    t = t.detach().float().clamp(0, 1)  # one copy; the rest in place (a 4096x4096 output is 200 MB per copy)
    return t.mul_(255).round_().byte().permute(1, 2, 0).cpu().numpy()


def block_images(n: int, size: int = 64, seed: int = 0, rects: int = 12, grid: int = 4) -> list[tuple[str, np.ndarray]]:
    """Piecewise-constant images of random rectangles with edges on a ``grid``: sharp edges that bicubic blurs
    and a small model learns to restore quickly (a toy task for tests)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        for _ in range(rects):
            y0, x0 = rng.integers(0, size // grid - 1, 2) * grid
            h, w = rng.integers(1, size // grid // 2, 2) * grid
            img[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
        out.append((f"blocks{i}.png", img))
    return out


def synthetic_images(n: int, size: int = 64, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Tiny smooth-plus-edges test images (no downloads): blurred noise, stripes and discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        img = np.zeros((size, size, 3))
        for c in range(3):
            f1, f2, ph = rng.uniform(1, 6, 2).tolist() + [rng.uniform(0, 6.3)]
            img[..., c] = 0.5 + 0.25 * np.sin(2 * np.pi * (f1 * xx + f2 * yy) + ph)
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] *= rng.uniform(0.3, 1.0, 3)
        out.append((f"synthetic{i}.png", np.clip(img * 255, 0, 255).astype(np.uint8)))
    return out
