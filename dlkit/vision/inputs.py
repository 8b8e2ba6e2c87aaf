"""Image inputs as a command gets them: files, folders, globs and ``-`` (paths on stdin). Imports no torch."""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

from dlkit.core.errors import DataError
from dlkit.core.io import quote
from dlkit.vision.image import IMAGE_SUFFIXES

MAX_PATH = 4096  # longest path read from stdin (PATH_MAX); longer lines are not file names


def image_inputs(args: list[str], warn, stdin=None, what: str = "process") -> list[str]:
    """Files, folders (their images by suffix, sorted; other files skipped with a warning), globs and ``-``
    (paths on stdin), in order. Names that do not exist are kept: each is reported when its turn comes and the
    others go on. No image at all is a DataError ("no images to <what>")."""
    out: list[str] = []
    for a in args:
        if a == "-":
            out += _stdin_paths(stdin or sys.stdin, warn)
        elif os.path.isdir(a):
            out += _folder_images(a, warn)
        elif not os.path.exists(a) and glob.has_magic(a):
            hits = sorted(glob.glob(a))
            if not hits:
                warn(f"{a}: no file matches")
            out += hits
        else:
            out.append(a)
    if not out:
        raise DataError(f"no images to {what}")
    return out


def _folder_images(folder: str, warn) -> list[str]:
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
    skipped = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if skipped:
        warn(f"{folder}: skipped {len(skipped)} file(s) that are not images by name "
             f"({', '.join(p.name for p in skipped[:3])}{' ...' if len(skipped) > 3 else ''})")
    images = [str(p) for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        warn(f"{folder}: holds no images")
    return images


def _stdin_paths(stream, warn) -> list[str]:
    lines = [ln.strip() for ln in stream.read().splitlines() if ln.strip()]
    long = [ln for ln in lines if len(ln) > MAX_PATH]
    if long:  # one warning, with the input cut: a 100 MB line must not become 100 MB of stderr
        warn(f"stdin: skipped {len(long)} line(s) longer than {MAX_PATH} characters, not file names "
             f"(first: '{quote(long[0], 40)}')")
    return [ln for ln in lines if len(ln) <= MAX_PATH]
