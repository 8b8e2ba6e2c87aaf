"""Input and output paths of `dlkit superres` (no torch: the CLI checks them before loading anything)."""

from __future__ import annotations

from pathlib import Path

from dlkit.core.errors import DataError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; folders expand to their image files (sorted, recursive, hidden files skipped)."""
    files: list[Path] = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not f.name.startswith("."))
            if not found:
                raise DataError(f"folder '{p}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        else:
            files.append(p)
    return files


def is_single(inputs: list[Path]) -> bool:
    return len(inputs) == 1 and not Path(inputs[0]).is_dir()


def check_out(inputs: list[Path], out: Path | None) -> None:
    """Several inputs (or a folder) need a folder for ``-o``: refuse a name that looks like an image file."""
    if out is None or is_single(inputs) or out.is_dir():
        return
    if out.suffix.lower() in IMAGE_SUFFIXES or out.exists():
        what = "a folder" if len(inputs) == 1 else f"{len(inputs)} inputs"
        raise UsageError(f"-o {out} looks like a file, but {what} need an output folder; "
                         f"give a folder name (e.g. -o {out.with_suffix('')}/)")


def output_path(src: Path, out: Path | None, single: bool, scale: int, base: Path | None = None) -> Path:
    """A single file goes to ``out`` (or <stem>_x<scale><suffix> beside it); many go into the folder ``out``."""
    if single and (out is None or out.suffix):
        return out if out is not None else src.with_name(f"{src.stem}_x{scale}{src.suffix}")
    if out is None:
        return src.with_name(f"{src.stem}_x{scale}{src.suffix}")
    rel = src.relative_to(base) if base is not None and src.is_relative_to(base) else Path(src.name)
    return out / rel
