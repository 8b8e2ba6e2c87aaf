"""HR images from a folder or a tar, LR made once with MATLAB bicubic, random aligned patches.

LR images are made from whole (mod-cropped) HR images once, as the literature's benchmarks are, then
aligned LR/HR patch pairs are cut with flips and 90-degree rotations. The bicubic kernel is symmetric, so
flipping or transposing the pair is the same as downsampling the flipped HR patch. Batches come from a
generator seeded by (seed, rank, step), which makes interrupted + resumed runs draw the same batches.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dlkit.core.batch import BatchOutcome, run_each
from dlkit.core.errors import DataError
from dlkit.tasks.superres.paths import IMAGE_SUFFIXES
from dlkit.tasks.superres.protocol import imresize, modcrop
from dlkit.vision.image import DEFAULT_MAX_PIXELS, open_image



def read_hr_images(src: str | Path, report=None, min_size: int = 0,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[list[tuple[str, np.ndarray]], BatchOutcome]:
    """``(name, HR uint8 RGB)`` for every image in a folder (recursive) or a .tar, and the batch outcome.

    Each file goes through the one decoder (EXIF orientation, modes, size refused before decoding); a bad
    or too small file is a warning naming it (a JSON record with ``--json``) and the others are read
    (:func:`dlkit.core.batch.run_each`). No usable image at all is a :class:`DataError`."""
    from dlkit.core.report import Reporter

    report = report or Reporter(quiet=True)
    src = Path(src)
    if not src.exists():
        raise DataError(f"'{src}' does not exist")

    def check(name: str, img: np.ndarray) -> tuple[str, np.ndarray]:
        if min(img.shape[:2]) < min_size:
            raise DataError(f"skipped: {img.shape[1]}x{img.shape[0]} px is smaller than {min_size} px")
        return name, img

    if src.is_dir():
        files = [f for f in sorted(src.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                 and not f.name.startswith(".")]
        outcome = run_each(files, lambda f: check(str(f), np.asarray(open_image(f, "RGB", max_pixels))), report,
                           name=str, what="images")
    elif src.is_file() and tarfile.is_tarfile(src):
        with tarfile.open(src) as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES
                              and not Path(m.name).name.startswith(".")), key=lambda m: m.name)
            cap = None if max_pixels is None else 4 * max_pixels + (1 << 20)  # a file beyond raw RGBA is no image

            def read(m: tarfile.TarInfo) -> tuple[str, np.ndarray]:
                if cap is not None and m.size > cap:
                    raise DataError(f"skipped: {m.size / 1e6:.0f} MB is larger than any image of the pixel limit")
                data = tar.extractfile(m).read()
                return check(m.name, np.asarray(open_image(data, "RGB", max_pixels, name=m.name)))

            outcome = run_each(members, read, report, name=lambda m: f"{src}:{m.name}", what="images")
    else:
        raise DataError(f"'{src}' is neither a folder nor a tar file")
    if not outcome.results:
        raise DataError(f"'{src}' holds no usable images" + (f" ({len(outcome.failed)} skipped)" if outcome.failed else ""))
    return outcome.results, outcome


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
