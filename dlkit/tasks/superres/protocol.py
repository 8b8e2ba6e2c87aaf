"""The super-resolution benchmark protocol: MATLAB-compatible ``imresize``, BT.601 luma, PSNR/SSIM.

Everything here is numpy (no torch), float64, and follows the super-resolution literature's protocol
(SRCNN, SRResNet, EDSR tables): HR cropped to a multiple of the scale, LR made with MATLAB's bicubic
``imresize`` (antialiased when shrinking), PSNR/SSIM on the Y channel of BT.601 YCbCr with ``scale``
pixels shaved from each border.
"""

from __future__ import annotations

import math

import numpy as np


# ---------------------------------------------------------------- MATLAB imresize (bicubic)
def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel with a = -0.5, exactly as MATLAB's ``imresize`` writes it."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


def resize_weights(in_len: int, out_len: int, scale: float, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: per output pixel, the input indices (0-based) and their weights.

    Returns ``(weights, indices)`` of shape ``(out_len, P)``. When shrinking with antialiasing the kernel is
    stretched by 1/scale (``h(x) = scale * cubic(scale * x)``); borders are mirrored (MATLAB's symmetric padding)."""
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = np.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(p)[None, :]  # (out, P), 1-based
    dist = u[:, None] - idx
    weights = scale * _cubic(scale * dist) if shrink else _cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])  # mirror: 0..n-1, n-1..0
    idx = aux[np.mod(idx - 1, 2 * in_len).astype(np.int64)]
    keep = np.any(weights != 0, axis=0)  # MATLAB drops all-zero columns
    return weights[:, keep], idx[:, keep]


_CHUNK_VALUES = 4_000_000  # float64 values per chunk (32 MB): a 12000x8000 bicubic output never sits in float64


def _resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float, antialias: bool, to_uint8: bool) -> np.ndarray:
    """Resize ``img`` along spatial ``axis`` (0 or 1). The other spatial axis is processed in chunks, so the
    float64 temporaries stay small; uint8 results are rounded and clipped per chunk (MATLAB's per-pass rounding)."""
    w, idx = resize_weights(img.shape[axis], out_len, scale, antialias)
    other = 1 - axis
    shape = list(img.shape)
    shape[axis] = out_len
    out = np.empty(shape, dtype=np.uint8 if to_uint8 else np.float64)
    per_line = out_len * int(np.prod(img.shape[2:], dtype=np.int64))
    step = max(1, _CHUNK_VALUES // max(1, per_line))
    for c0 in range(0, img.shape[other], step):
        sl = [slice(None)] * img.ndim
        sl[other] = slice(c0, c0 + step)
        moved = np.moveaxis(img[tuple(sl)], axis, 0)  # (L, chunk, ...)
        acc = np.zeros((out_len,) + moved.shape[1:], dtype=np.float64)
        extra = (slice(None),) + (None,) * (moved.ndim - 1)
        for j in range(w.shape[1]):
            acc += w[:, j][extra] * moved[idx[:, j]]
        if to_uint8:
            acc = np.clip(np.round(acc), 0, 255)
        out[tuple(sl)] = np.moveaxis(acc, 0, axis)
    return out


def imresize(img: np.ndarray, scale: float | None = None, size: tuple[int, int] | None = None,
             antialias: bool = True) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` on an ``(H, W)`` or ``(H, W, C)`` array.

    uint8 input gives uint8 output, rounded and clipped after each pass as MATLAB's ``imresizemex`` does
    (it keeps the class of its input); float input gives float64 output, unclipped. ``size`` = (H, W) overrides ``scale``.
    As in MATLAB the dimension with the smaller scale factor is resized first (rows first on a tie).
    Memory: the output plus small chunks (no full-size float64 copy for uint8 images)."""
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects (H, W) or (H, W, C), got shape {img.shape}")
    h, w = img.shape[:2]
    if size is not None:
        oh, ow = size
        sh, sw = oh / h, ow / w
    else:
        if scale is None:
            raise ValueError("imresize needs scale or size")
        sh = sw = float(scale)
        oh, ow = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    is_uint8 = img.dtype == np.uint8
    x = img if is_uint8 else img.astype(np.float64)
    order = [0, 1] if sh <= sw else [1, 0]
    for axis in order:
        out_len, s = (oh, sh) if axis == 0 else (ow, sw)
        x = _resize_axis(x, axis, out_len, s, antialias, is_uint8)
    return x


# ---------------------------------------------------------------- colour and metrics
def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma in [16, 235] as MATLAB's ``rgb2ycbcr``: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255.

    ``img`` is uint8 (0..255) or float in [0, 1]; greyscale (H, W) input is treated as R = G = B."""
    x = img.astype(np.float64)
    if img.dtype == np.uint8:
        x = x / 255.0
    if x.ndim == 2:
        return 16.0 + (65.481 + 128.553 + 24.966) * x
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W down to multiples of ``scale`` (top-left kept), as the literature's ``modcrop``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def shave(img: np.ndarray, border: int) -> np.ndarray:
    if border <= 0:
        return img
    return img[border:-border, border:-border]


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM as in Wang et al. 2004 and the SR literature: 11x11 Gaussian window, sigma 1.5, population covariance."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a.astype(np.float64), b.astype(np.float64), gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=data_range))


SSIM_WINDOW = 11  # the Gaussian window of sigma 1.5 truncated at 3.5 sigma: 2 * 5 + 1 pixels


def min_side(scale: int) -> int:
    """The smallest HR side the protocol can measure at ``scale``: SSIM's window after shaving ``scale`` px."""
    return SSIM_WINDOW + 2 * scale


def check_size(shape: tuple[int, ...], scale: int) -> None:
    """Refuse an HR image too small for the protocol with one line (instead of skimage's ValueError)."""
    from dlkit.core.errors import DataError

    h, w = shape[:2]
    h, w = h - h % scale, w - w % scale
    need = min_side(scale)
    if min(h, w) < need:
        raise DataError(f"{shape[1]}x{shape[0]} px is too small to measure at x{scale}: PSNR/SSIM need at least "
                        f"{need}x{need} px (SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window after shaving {scale} px)")


def sr_metrics(sr: np.ndarray, hr: np.ndarray, border: int) -> tuple[float, float]:
    """(PSNR, SSIM) on the Y channel with ``border`` pixels shaved; ``sr`` and ``hr`` are uint8 images."""
    if sr.shape != hr.shape:
        raise ValueError(f"shapes differ: {sr.shape} vs {hr.shape}")
    if min(hr.shape[:2]) - 2 * border < SSIM_WINDOW:
        from dlkit.core.errors import DataError

        raise DataError(f"{hr.shape[1]}x{hr.shape[0]} px is too small for SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} "
                        f"window after shaving {border} px")
    ys, yh = shave(rgb_to_y(sr), border), shave(rgb_to_y(hr), border)
    return psnr(ys, yh), ssim(ys, yh)
