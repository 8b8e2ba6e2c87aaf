"""Sampling from a trained generator: n samples, a latent walk, class-conditional samples.

Pure functions over a loaded generator; the CLI writes the results. The same ``seed`` gives the same samples.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Iterator

import torch

from dlkit.core.errors import UsageError
from dlkit.tasks.gan.model import GANConfig, GANPair, config_from_dict

TASK = "gan"


def _build(meta: dict) -> GANPair:
    cfg = config_from_dict(meta.get("config"))
    return GANPair(cfg, with_discriminator=bool(meta.get("has_discriminator", False)))


def load_gan(spec: str | os.PathLike, device="cpu") -> tuple[GANPair, dict]:
    """A ``gan`` model file (path or bundled name) -> (GANPair in eval mode, metadata); one line if it is not."""
    from dlkit.core.loader import load_model

    model, meta = load_model(spec, TASK, _build, device=device)
    return model.float(), meta


def _latents(cfg: GANConfig, n: int, seed: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, cfg.z_dim, generator=g).to(device)


def _labels(cfg: GANConfig, n: int, klass: int | None, device, start: int = 0) -> torch.Tensor | None:
    if not cfg.num_classes:
        if klass is not None:
            raise UsageError("--class needs a class-conditional model (trained with --conditional)")
        return None
    if klass is not None and not 0 <= klass < cfg.num_classes:
        raise UsageError(f"--class {klass}: the model has classes 0..{cfg.num_classes - 1}")
    y = torch.full((n,), klass) if klass is not None else torch.arange(start, start + n) % cfg.num_classes
    return y.to(device)


@torch.no_grad()
def iter_samples(model: GANPair, n: int, seed: int = 0, klass: int | None = None, batch: int = 500,
                 autocast=contextlib.nullcontext) -> Iterator[torch.Tensor]:
    """:func:`sample` in batches of at most ``batch``, produced as they are consumed: ``gan-sample -n 1e7 |
    head -1`` stops after one batch, and memory never holds more than one. The latents come from one seeded
    generator, batch after batch, so the same (n, seed, batch) always gives the same samples."""
    if n < 1:
        raise UsageError(f"-n must be at least 1 (got {n})")
    cfg, dev = model.cfg, next(model.parameters()).device
    _labels(cfg, 1, klass, dev)  # refuse a bad --class before any work
    g = torch.Generator().manual_seed(seed)
    for i in range(0, n, batch):
        m = min(batch, n - i)
        z = torch.randn(m, cfg.z_dim, generator=g).to(dev)
        with autocast():
            x = model.generator(z, _labels(cfg, m, klass, dev, start=i)).float().cpu()
        yield ((x + 1) / 2).clamp_(0, 1) if cfg.is_image else x


def sample(model: GANPair, n: int, seed: int = 0, klass: int | None = None, batch: int = 500,
           autocast=contextlib.nullcontext) -> torch.Tensor:
    """n samples (images in [0, 1] (n, C, H, W); toys as raw coordinates (n, D)), in batches.
    ``autocast``: the runtime's mixed-precision context (``rt.autocast``)."""
    return torch.cat(list(iter_samples(model, n, seed, klass, batch, autocast)))


@torch.no_grad()
def interpolate(model: GANPair, rows: int = 8, steps: int = 8, seed: int = 0, klass: int | None = None,
                autocast=contextlib.nullcontext) -> torch.Tensor:
    """A latent walk: ``rows`` pairs of random latents, ``steps`` spherical interpolations between each
    (White 2016, "Sampling generative networks": slerp keeps the Gaussian norm). -> (rows*steps, C, H, W) in [0, 1]."""
    cfg, dev = model.cfg, next(model.parameters()).device
    if not cfg.is_image:
        raise UsageError("--interpolate draws image grids; this is a toy model (use -n)")
    ends = _latents(cfg, 2 * rows, seed, dev).view(rows, 2, cfg.z_dim)
    a, b = ends[:, 0], ends[:, 1]  # (R, Z)
    omega = torch.acos((a / a.norm(dim=1, keepdim=True) * b / b.norm(dim=1, keepdim=True)).sum(1).clamp(-1, 1))
    t = torch.linspace(0, 1, steps, device=dev)
    so = torch.sin(omega).clamp_min(1e-6)[:, None, None]  # (R, 1, 1)
    w_a = torch.sin((1 - t)[None, :, None] * omega[:, None, None]) / so
    w_b = torch.sin(t[None, :, None] * omega[:, None, None]) / so
    z = (w_a * a[:, None] + w_b * b[:, None]).reshape(rows * steps, cfg.z_dim)
    y = _labels(cfg, rows * steps, klass, dev)
    if y is not None and klass is None:  # one class per row
        y = (torch.arange(rows * steps, device=dev) // steps) % cfg.num_classes
    with autocast():
        x = model.generator(z, y).float().cpu()
    return ((x + 1) / 2).clamp_(0, 1)


def write_images(images, folder: str | os.PathLike, fmt: str = "png", n: int | None = None,
                 overwrite: bool = False) -> list[Path]:
    """One file per image: ``folder/000000.png``..., atomic writes. ``images``: a tensor or batches of them
    (:func:`iter_samples`), written as they come; ``n`` (the total) sets the width of the numbers. Existing
    files are refused unless ``overwrite`` (the output policy), before anything is written; with it, the
    earlier numbered samples are removed first."""
    from dlkit.core.atomic import check_writable_dir
    from dlkit.core.io import guard_output
    from dlkit.vision.image import save_image

    folder = check_writable_dir(folder)  # the one early check of an output folder
    total = n if n is not None else len(images)
    width = max(6, int(math.log10(max(1, total))) + 1)
    name = lambda i: folder / f"{i:0{width}d}.{fmt}"  # noqa: E731
    taken = next((p for p in sorted(folder.glob(f"*.{fmt}")) if p.stem.isdigit()), None)
    if taken is not None and not overwrite:
        guard_output(taken)  # samples of an earlier run: one line naming the file and --overwrite
    if taken is not None:  # --overwrite replaces the earlier samples, all of them (a smaller -n leaves none behind)
        for p in folder.glob(f"*.{fmt}"):
            if p.stem.isdigit():
                p.unlink(missing_ok=True)
    batches = [images] if isinstance(images, torch.Tensor) else images
    paths, i = [], 0
    for b in batches:
        for x in b:
            paths.append(save_image(x, name(i)))
            i += 1
    return paths
