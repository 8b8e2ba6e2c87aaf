"""Sample grids (GAN samples, dataset previews, adversarial examples) through ``torchvision.utils.make_grid``."""

from __future__ import annotations

import math
import os
from pathlib import Path


def make_grid(images, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0):
    """(N, C, H, W) float in [0, 1] -> (C, H', W') grid, ``nrow`` images per row (default: a square)."""
    import torch
    from torchvision.utils import make_grid as tv_make_grid

    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(images)
    if images.dim() == 3:  # (N, H, W): greyscale without a channel axis
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"expected images of shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    nrow = nrow or max(1, math.ceil(math.sqrt(images.shape[0])))
    return tv_make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=padding, pad_value=pad_value)


def save_grid(images, path: str | os.PathLike, nrow: int | None = None, padding: int = 2,
              pad_value: float = 1.0) -> Path:
    """Write a grid of ``images`` (N, C, H, W) float in [0, 1] (or uint8) atomically; returns the path."""
    from dlkit.vision.image import save_image

    grid = make_grid(images, nrow, padding, pad_value)  # (3, H', W'): make_grid repeats a grey channel
    return save_image(grid, path)
