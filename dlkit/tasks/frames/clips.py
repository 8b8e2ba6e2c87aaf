"""Video clips a user has, in and out: an animated GIF, a folder of frames or a .npy; a GIF and a PNG strip.

Every clip is read into float32 (T, H, W, C) in [0, 1], C = 1 (grey) or 3 (colour), with the pixel cap checked
from headers before anything is decoded (frames x pixels for a GIF or .npy) and every failure one
:class:`~dlkit.core.errors.DataError` line naming the file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from dlkit.core.errors import DataError
from dlkit.core.io import quote

MAX_FRAMES = 1000
MAX_PIXELS = 64_000_000  # over all frames of a clip
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def read_clip(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A clip file or folder -> float32 (T, H, W, C) in [0, 1]."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"clip '{quote(p)}' does not exist")
    if p.is_dir():
        clip = _read_folder(p, max_pixels)
    elif p.suffix.lower() == ".npy":
        clip = _read_npy(p, max_pixels)
    elif p.suffix.lower() == ".gif":
        clip = _read_gif(p, max_pixels)
    else:
        raise DataError(f"'{quote(p)}' is not a clip: give an animated .gif, a folder of frames or a .npy")
    return _grey_if_equal(clip)


def _grey_if_equal(clip: np.ndarray) -> np.ndarray:
    if clip.shape[-1] == 3 and np.array_equal(clip[..., 0], clip[..., 1]) and np.array_equal(clip[..., 0], clip[..., 2]):
        return clip[..., :1]
    return clip


def _check_size(p: Path, frames: int, h: int, w: int, max_pixels: int) -> None:
    if frames > MAX_FRAMES or frames * h * w > max_pixels:
        raise DataError(f"clip '{quote(p)}' is too large ({frames} frames of {w}x{h}); dlkit reads at most "
                        f"{MAX_FRAMES} frames and {max_pixels:,} pixels in all")


def _read_gif(p: Path, max_pixels: int) -> np.ndarray:
    import warnings

    from PIL import Image

    from dlkit.vision.image import check_image

    w, h = check_image(p, max_pixels)  # the header alone; a broken or non-image file is one line here
    try:
        with warnings.catch_warnings(), Image.open(p) as im:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if im.format != "GIF":
                raise DataError(f"'{quote(p)}' is not a GIF (it is {im.format})")
            n = getattr(im, "n_frames", 1)
            _check_size(p, n, h, w, max_pixels)
            frames = []
            for i in range(n):
                im.seek(i)
                frames.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except DataError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombWarning) as e:  # broken files
        raise DataError(f"'{quote(p)}' is not a readable GIF ({quote(str(e).splitlines()[0] if str(e) else type(e).__name__)})") from None
    return np.stack(frames).astype(np.float32) / 255.0


def _read_folder(p: Path, max_pixels: int) -> np.ndarray:
    from dlkit.vision.image import image_size, open_image

    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise DataError(f"folder '{quote(p)}' holds no frames (.png, .jpg, ...)")
    sizes = [image_size(f) for f in files[:MAX_FRAMES + 1]]  # headers only
    w, h = sizes[0]
    _check_size(p, len(files), h, w, max_pixels)
    odd = next((f for f, s in zip(files, sizes) if s != (w, h)), None)
    if odd is not None:
        raise DataError(f"frame '{quote(odd)}' is {image_size(odd)[0]}x{image_size(odd)[1]}; the folder's first frame "
                        f"is {w}x{h}: all frames must have one size")
    frames = [np.asarray(open_image(f, "RGB", max_pixels=max_pixels), dtype=np.uint8) for f in files]
    return np.stack(frames).astype(np.float32) / 255.0


def _read_npy(p: Path, max_pixels: int) -> np.ndarray:
    from dlkit.tasks.frames.data import npy_header

    shape, dtype, _, _ = npy_header(p)
    ok = len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3, 4))
    if not ok or dtype.kind not in "uif" or (dtype.kind in "ui" and dtype != np.uint8):
        raise DataError(f"'{quote(p)}' is {dtype} {shape}; a clip .npy is uint8 or float in [0, 1] of shape "
                        "(T, H, W) or (T, H, W, C) with C = 1, 3 or 4")
    _check_size(p, shape[0], shape[1], shape[2], max_pixels)
    a = np.load(p, allow_pickle=False)
    a = a[..., None] if a.ndim == 3 else a[..., :3] if a.shape[3] == 4 else a
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    a = a.astype(np.float32)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise DataError(f"'{quote(p)}': float frames must be finite and in [0, 1] (found {np.nanmin(a):.3g} .. "
                        f"{np.nanmax(a):.3g}); scale them or save uint8")
    return a


def fit_clip(clip: np.ndarray, channels: int, size: int) -> np.ndarray:
    """(T, H, W, C) -> (T, size, size, channels): luminance (BT.601) or grey repeated, resized with Pillow."""
    from PIL import Image

    if clip.shape[-1] != channels:
        clip = (clip @ np.array([0.299, 0.587, 0.114], np.float32))[..., None] if channels == 1 else np.repeat(clip, 3, -1)
    if clip.shape[1:3] == (size, size):
        return clip
    out = [np.stack([np.asarray(Image.fromarray(f[..., c]).resize((size, size), Image.BILINEAR))
                     for c in range(channels)], -1) for f in clip]
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def gif_bytes(frames: np.ndarray, ms: int = 200) -> bytes:
    """(T, H, W, C) float in [0, 1] -> an animated GIF that loops."""
    from PIL import Image

    u8 = to_uint8(frames)
    ims = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in u8]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=ms, loop=0)
    return buf.getvalue()


def write_gif(frames: np.ndarray, path: str | os.PathLike, ms: int = 200) -> Path:
    from dlkit.core.atomic import atomic_write_bytes

    return atomic_write_bytes(path, gif_bytes(frames, ms))


def strip(rows: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Rows of frames (each (T_i, H, W, C)) -> one image (H', W', C) on white, a gap between frames and rows."""
    h, w, c = rows[0].shape[1:]
    width = max(len(r) for r in rows) * (w + gap) - gap
    out = np.ones((len(rows) * (h + gap) - gap, width, c), np.float32)
    for i, row in enumerate(rows):
        for j, f in enumerate(row):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = f
    return out


def write_strip(context: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None,
                path: str | os.PathLike) -> Path:
    """The PNG strip: row 1 the context, row 2 the prediction, row 3 the truth when known."""
    from dlkit.vision.image import save_image

    rows = [context, prediction] + ([truth] if truth is not None and len(truth) else [])
    img = to_uint8(strip(rows))
    return save_image(img[..., 0] if img.shape[-1] == 1 else img, path)
