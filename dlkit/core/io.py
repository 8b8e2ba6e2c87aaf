"""Guarded input and streamed output: text files, stdin lines, images. Imports no torch."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

from dlkit.core.errors import DataError, OutputError

_SNIFF = 1 << 16


def check_text_file(path: str | os.PathLike) -> Path:
    """Refuse a missing, empty, binary or non-UTF-8 text file with a one-line reason."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file '{p}' does not exist")
    if p.is_dir():
        raise DataError(f"'{p}' is a folder; expected a text file")
    if p.stat().st_size == 0:
        raise DataError(f"data file '{p}' is empty")
    with open(p, "rb") as f:
        head = f.read(_SNIFF)
    if b"\x00" in head:
        raise DataError(f"data file '{p}' looks binary (it holds NUL bytes); expected UTF-8 text")
    try:
        # an incomplete multi-byte character at the cut is fine
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:
            raise DataError(f"data file '{p}' is not UTF-8 text (bad byte at offset {e.start})") from None
    return p


def text_files(path: str | os.PathLike, suffixes=(".txt", ".md", ".text", "")) -> list[Path]:
    """A text file, or the text files in a folder (sorted, recursive), each checked."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".") and f.suffix in suffixes)
        if not files:
            raise DataError(f"folder '{p}' holds no text files")
        return [check_text_file(f) for f in files]
    return [check_text_file(p)]


def iter_input_lines(args: list[str] | None, stream=None, warn=None) -> Iterator[str]:
    """Text arguments if given, else stdin line by line (decoded as UTF-8 with bad bytes replaced)."""
    if args:
        yield from args
        return
    stream = stream if stream is not None else sys.stdin.buffer
    warned = False
    for raw in stream:
        if isinstance(raw, str):
            line = raw
        else:
            line = raw.decode("utf-8", errors="replace")
            if "\ufffd" in line and b"\xef\xbf\xbd" not in raw and warn and not warned:
                warn("input holds bytes that are not UTF-8; they were replaced with U+FFFD")
                warned = True
        yield line.rstrip("\r\n")


def write_line(text: str, stream=None) -> None:
    stream = stream if stream is not None else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def ensure_can_write(out: str | os.PathLike, inputs: list[Path] = (), overwrite: bool = False) -> Path:
    """Refuse to write over an input file unless ``overwrite``; create the parent folder."""
    out = Path(out)
    for src in inputs:
        if out.exists() and Path(src).exists() and out.resolve() == Path(src).resolve() and not overwrite:
            raise OutputError(f"output '{out}' is the input file; pass --overwrite to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create folder '{out.parent}': {e.strerror}") from None
    return out


def load_image(path: str | os.PathLike, mode: str | None = "RGB"):
    """Open an image with Pillow and decode it fully; bad files raise a one-line :class:`DataError`."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise DataError(f"image '{p}' does not exist")
    if p.is_dir():
        raise DataError(f"'{p}' is a folder, not an image")
    if p.stat().st_size == 0:
        raise DataError(f"image '{p}' is empty (0 bytes)")
    try:
        with Image.open(p) as im:
            im.load()
            img = im.copy()
    except UnidentifiedImageError:
        raise DataError(f"'{p}' is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"image '{p}' is damaged or truncated: {e}") from None
    if mode is not None and img.mode != mode:
        img = img.convert(mode)
    return img


def save_image(img, path: str | os.PathLike) -> Path:
    """Save a Pillow image atomically; the format comes from the suffix."""
    import io

    from dlkit.core.checkpoint import atomic_write_bytes

    p = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
    kind = fmt.get(p.suffix.lower())
    if kind is None:
        raise OutputError(f"cannot tell the image format of '{p}' (use .png, .jpg, .bmp, .webp or .tif)")
    if kind == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=kind)
    return atomic_write_bytes(p, buf.getvalue())
