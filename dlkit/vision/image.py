"""The one image decoder for every command, and the one image writer. Imports no torch at module level.

:func:`open_image` reads the size from the header and refuses an image over ``max_pixels`` *before* any
pixel is decoded (a 89-byte PNG can claim 10000x9500), treats Pillow's ``DecompressionBombWarning`` as an
error for that file, applies the EXIF orientation (phone photos come out upright; the tag is removed so
viewers do not rotate them twice), and turns empty, truncated and non-image files into a one-line
:class:`ImageError` naming the file. Greyscale, palette, LA/RGBA, CMYK and 16-bit images are converted to
the requested mode; 16-bit values are scaled to 8 bits, not clipped.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dlkit.core.errors import DataError, OutputError
from dlkit.core.io import quote

# 64 megapixels: an 8K frame (33 Mpx) or a 50 Mpx camera passes; a 95 Mpx decompression bomb does not.
# Decoded as RGB that is at most 192 MB. Commands whose work grows faster than the input (superres) pass less.
DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF",
            ".tiff": "TIFF"}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_LOCK = threading.Lock()  # Pillow's bomb limit is a module global


class ImageError(DataError):
    """An image that cannot be used: missing, empty, truncated, not an image, or too large."""


class ImageTooLarge(ImageError):
    """The header claims more pixels than allowed (refused before decoding)."""


def _mpx(n: int) -> str:
    return f"{n / 1e6:.1f} Mpx" if n >= 100_000 else f"{n} px"


def _pil():
    """Pillow, with its ``DecompressionBombWarning`` turned into an error for the whole process (the policy:
    an image over Pillow's limit is refused, never decoded with a warning)."""
    from PIL import Image

    # installed on every call (it replaces its own entry): test runners and catch_warnings() reset the filters
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    return Image


@contextlib.contextmanager
def _pillow_limit_lifted():
    """Pillow's own limit off for a moment (a header read, or a user's --max-pixels above it): our check rules."""
    Image = _pil()
    with _LOCK:
        old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def image_size(source: str | os.PathLike | bytes, name: str | None = None) -> tuple[int, int]:
    """(W, H) from the header alone (nothing decoded); bad files raise :class:`ImageError`."""
    from PIL import UnidentifiedImageError

    Image = _pil()
    data, label = _bytes_or_path(source, name)
    try:
        with _pillow_limit_lifted(), Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            return im.size
    except UnidentifiedImageError:
        raise ImageError(f"'{label}' is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"image '{label}' is damaged: {_first_line(e)}") from None


def _check_pixels(label: str, size: tuple[int, int], max_pixels: int | None) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLarge(f"image '{label}' is {w}x{h} ({_mpx(w * h)}), over the limit of {_mpx(max_pixels)}; "
                            "refused before decoding")


def check_image(source: str | os.PathLike | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                name: str | None = None) -> tuple[int, int]:
    """(W, H) of a readable image within ``max_pixels``, from the header alone: lets a command refuse a bomb
    before it loads a model. The same errors as :func:`open_image`."""
    _, label = _bytes_or_path(source, name)
    size = image_size(source, name)
    _check_pixels(label, size, max_pixels)
    return size


class _OverPillowLimit(Exception):
    pass


def _decode(data: bytes | Path, label: str, max_pixels: int | None):
    """Open, check the header's size against ``max_pixels``, then decode the first frame (file open meanwhile)."""
    from PIL import UnidentifiedImageError

    Image = _pil()
    try:
        with (io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")) as f:
            im = Image.open(f)
            _check_pixels(label, im.size, max_pixels)
            im.load()
            return im
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _OverPillowLimit() from None
    except UnidentifiedImageError:
        raise ImageError(f"'{label}' is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageError(f"image '{label}' is damaged or truncated: {_first_line(e)}") from None


def open_image(source: str | os.PathLike | bytes, mode: str | None = "RGB", max_pixels: int | None = DEFAULT_MAX_PIXELS,
               name: str | None = None):
    """Decode an image file (or its bytes) into a Pillow image, upright, in ``mode`` (None: its own mode).

    ``name`` labels bytes in messages (e.g. a tar member). ``max_pixels`` None disables the size limit,
    Pillow's included. Thread-safe; decoding runs in parallel across threads."""
    from PIL import ImageOps

    data, label = _bytes_or_path(source, name)
    try:
        im = _decode(data, label, max_pixels)
    except _OverPillowLimit:  # over Pillow's limit (89.5 Mpx): ours decides, with our message
        _check_pixels(label, image_size(data, label), max_pixels)
        with _pillow_limit_lifted():  # the user allowed more than Pillow (rare): decode under the lock
            im = _decode(data, label, max_pixels)
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception:  # noqa: BLE001 - broken EXIF blocks must not lose the pixels; keep them as stored
        pass
    return im if mode is None else convert(im, mode)


def _bytes_or_path(source, name: str | None) -> tuple[bytes | Path, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = quote(name or "<bytes>", 200)
        if not data:
            raise ImageError(f"image '{label}' is empty (0 bytes)")
        return data, label
    p = Path(source)
    label = quote(name or str(p), 200)  # messages quote the name cut: a 100 MB "path" must not flood stderr
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ImageError(f"image '{label}' does not exist") from None
    except OSError as e:  # a name too long, a loop of links, no permission...
        raise ImageError(f"image '{label}' cannot be read: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"'{label}' is a folder, not an image")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        raise ImageError(f"image '{label}' is empty (0 bytes)")
    return p, label


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def convert(im, mode: str):
    """Any Pillow image in ``mode`` ("RGB", "L", "RGBA"...); 16-bit and float greyscale are scaled to 8 bits."""
    from PIL import Image

    if im.mode == mode:
        return im
    if im.mode in _SIXTEEN_BIT:
        im = Image.fromarray(eight_bit(np.asarray(im), sixteen=im.mode.startswith("I;16")), "L")
        if mode == "L":
            return im
    if im.mode == "P" and "transparency" in im.info and mode in ("RGB", "L"):
        im = im.convert("RGBA")  # palette transparency goes through RGBA, as Pillow advises
    out = im.convert(mode)
    if "exif" in im.info:
        out.info["exif"] = im.info["exif"]
    return out


def eight_bit(a: np.ndarray, sixteen: bool = False) -> np.ndarray:
    """16-bit (or int32/float) greyscale values -> uint8, scaled by the range the data uses (not clipped):
    16-bit storage by 65535, int32 by 65535 when a value exceeds 255, float by 1 when all lie in [0, 1]."""
    hi = float(a.max()) if a.size else 0.0
    if a.dtype.kind == "f" and hi <= 1.0 and (not a.size or float(a.min()) >= 0.0):
        top = 1.0
    else:
        top = 65535.0 if sixteen or hi > 255 else 255.0
    return np.clip(np.round(a.astype(np.float32) / top * 255.0), 0, 255).astype(np.uint8)


def to_array(img, mode: str = "RGB") -> np.ndarray:
    """A Pillow image -> (H, W, 3) uint8 for RGB, (H, W) for L, (H, W, 4) for RGBA."""
    return np.asarray(convert(img, mode))


def to_tensor(img):
    """A Pillow image or a uint8 array (H, W[, C]) -> float tensor (C, H, W) in [0, 1]."""
    import torch

    a = np.asarray(img) if not isinstance(img, np.ndarray) else img
    if a.ndim == 2:
        a = a[..., None]
    a = np.ascontiguousarray(a) if a.flags.writeable else np.array(a)  # torch wants writable memory
    t = torch.from_numpy(a).permute(2, 0, 1)  # (C, H, W)
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    return t.float()


def to_pil(image: Any):
    """A Pillow image, a uint8/float array (H, W[, C]) or a tensor (C, H, W) / (1, C, H, W) -> Pillow image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if hasattr(image, "detach"):  # a torch tensor, channels first
        t = image.detach()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(f"expected one image, got a batch of {t.shape[0]}")
            t = t[0]
        if t.is_floating_point():
            t = t.float().clamp(0, 1).mul(255).round_().byte()
        image = t.permute(1, 2, 0).cpu().numpy()  # (H, W, C)
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.round(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    modes = {2: "L", 3: "RGB", 4: "RGBA"}
    mode = "L" if a.ndim == 2 else modes.get(a.shape[2])
    if mode is None:
        raise ValueError(f"cannot save an image of shape {a.shape}")
    return Image.fromarray(np.ascontiguousarray(a), mode)


def image_format(path: str | os.PathLike) -> str:
    """The Pillow format name for ``path``'s suffix; an unknown suffix is an :class:`OutputError`."""
    p = Path(path)
    kind = _FORMATS.get(p.suffix.lower())
    if kind is None:
        raise OutputError(f"cannot tell the image format of '{p}' (use .png, .jpg, .bmp, .webp or .tif)")
    return kind


def save_image(image: Any, path: str | os.PathLike, exif: bytes | None = None, quality: int = 95) -> Path:
    """Write an image atomically; the format comes from the suffix (PNG/BMP/TIFF/WebP lossless, JPEG at
    ``quality``). ``exif`` (default: the image's own, orientation already removed by :func:`open_image`)
    is kept where the format stores it. Accepts what :func:`to_pil` accepts."""
    from dlkit.core.atomic import atomic_write

    p = Path(path)
    kind = image_format(p)
    img = to_pil(image)
    if kind == "JPEG" and img.mode not in ("RGB", "L", "CMYK"):
        img = img.convert("RGB")
    if kind == "BMP" and img.mode == "LA":
        img = img.convert("RGBA")
    opts: dict[str, Any] = {}
    exif = exif if exif is not None else img.info.get("exif")
    if exif and kind in ("JPEG", "PNG", "WEBP", "TIFF"):
        opts["exif"] = exif
    if kind == "JPEG":
        opts["quality"] = quality
    elif kind == "WEBP":
        opts["lossless"] = True
    elif kind == "PNG":
        opts["compress_level"] = 6

    def write(f) -> None:
        try:
            img.save(f, format=kind, **opts)
        except (ValueError, KeyError) as e:  # e.g. a mode the format cannot store
            raise OSError(f"cannot store a {img.mode} image as {kind}: {_first_line(e)}") from None

    return atomic_write(p, write)
