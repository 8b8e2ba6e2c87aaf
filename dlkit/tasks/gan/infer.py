"""Sampling from a trained generator: n samples, a latent walk, class-conditional samples.

Pure functions over a loaded generator; the CLI writes the results. The same ``seed`` gives the same samples.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch

from dlkit.core.errors import UsageError
from dlkit.tasks.gan.model import GANConfig, GANPair, config_from_dict

TASK = "gan"


def _build(meta: dict) -> GANPair:
    cfg = config_from_dict(meta.get("config"))
    return GANPair(cfg, with_discriminator=bool(meta.get("has_discriminator", False)))


def load_gan(spec: str | os.PathLike, device="cpu") -> tuple[GANPair, dict]:
    """A ``gan`` model file (path or bundled name) -> (GANPair in eval mode, metadata); one line if it is not."""
    from dlkit.core.checkpoint import load_model

    model, meta = load_model(spec, TASK, _build, device=device)
    return model.float(), meta


def _latents(cfg: GANConfig, n: int, seed: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, cfg.z_dim, generator=g).to(device)


def _labels(cfg: GANConfig, n: int, klass: int | None, device) -> torch.Tensor | None:
    if not cfg.num_classes:
        if klass is not None:
            raise UsageError("--class needs a class-conditional model (trained with --conditional)")
        return None
    if klass is not None and not 0 <= klass < cfg.num_classes:
        raise UsageError(f"--class {klass}: the model has classes 0..{cfg.num_classes - 1}")
    y = torch.full((n,), klass) if klass is not None else torch.arange(n) % cfg.num_classes
    return y.to(device)


@torch.no_grad()
def sample(model: GANPair, n: int, seed: int = 0, klass: int | None = None, batch: int = 500,
           autocast=contextlib.nullcontext) -> torch.Tensor:
    """n samples (images in [0, 1] (n, C, H, W); toys as raw coordinates (n, D)), in batches.
    ``autocast``: the runtime's mixed-precision context (``rt.autocast``)."""
    if n < 1:
        raise UsageError(f"-n must be at least 1 (got {n})")
    cfg, dev = model.cfg, next(model.parameters()).device
    z, y = _latents(cfg, n, seed, dev), _labels(cfg, n, klass, dev)
    out = []
    for i in range(0, n, batch):
        with autocast():
            out.append(model.generator(z[i:i + batch], None if y is None else y[i:i + batch]).float().cpu())
    x = torch.cat(out)
    return ((x + 1) / 2).clamp_(0, 1) if cfg.is_image else x


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


def write_images(images: torch.Tensor, folder: str | os.PathLike, fmt: str = "png") -> list[Path]:
    """One file per image: ``folder/000000.png``..., atomic writes."""
    from dlkit.vision.image import save_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(6, int(math.log10(max(1, len(images)))) + 1)
    paths = []
    for i, x in enumerate(images):
        paths.append(save_image(x, folder / f"{i:0{width}d}.{fmt}"))
    return paths
