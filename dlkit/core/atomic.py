"""Atomic file writes: a temp file beside the target, fsync, rename. Imports no torch."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable

from dlkit.core.errors import OutputError


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Write through ``write(f)`` into a temp file beside ``path``, fsync, then rename over it.

    On any failure (disk full, permissions) the temp file is removed, the old ``path`` stays intact
    and an :class:`OutputError` names the file and the reason."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        reason = e.strerror or str(e)
        raise OutputError(f"could not write '{path}': {reason}") from e
    try:  # make the rename durable; not possible on every filesystem
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Fail early (before hours of training) when the output folder cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder '{path}': {e.strerror}") from e
    if not os.access(path, os.W_OK):
        raise OutputError(f"output folder '{path}' is not writable")
    return path
