"""The output folder of a training run: never clobber a trained model, one run at a time, no stale temp files.

Every ``*-train`` command opens its ``--out`` folder with :func:`open_run_dir`:

* a folder that already holds a run is refused unless ``--resume`` (continue it) or ``--overwrite``
  (replace it) is given, so two experiments with the default ``--out`` never clobber each other; both
  together are a usage error;
* a lock (``fcntl.flock`` on ``OUT/.dlkit.lock``, released by the kernel even after ``kill -9``) refuses a
  second concurrent run into the same folder with one line;
* temp files left by a run killed during an atomic save (``name.tmpPID``) are removed at the start.

Runs that keep copies of their model along the way (``--snapshot-every``) write them to ``OUT/snapshots/`` with
:func:`write_snapshot`; a new run (not ``--resume``) clears the old ones with :func:`clear_snapshots`, so the late
snapshots that ``dlkit models average`` combines always come from one run.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Iterator

from dlkit.core.atomic import check_writable_dir
from dlkit.core.errors import OutputError, UsageError

LOCK_NAME = ".dlkit.lock"
SNAPSHOTS = "snapshots"
_TMP = re.compile(r".+\.tmp\d+$")


def run_files(out: Path) -> list[str]:
    """Files that make ``out`` a run folder (anything but the lock and stale temp files)."""
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME and not _TMP.match(p.name))


def check_run_dir(out: str | os.PathLike, resume: bool, overwrite: bool) -> Path:
    """Refuse an ``out`` that already holds files unless resuming or overwriting (no side effects)."""
    out = Path(out)
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other: --resume continues the run in --out, "
                         "--overwrite replaces it")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: is a file, not a folder")
    found = run_files(out)
    if found and not (resume or overwrite):
        shown = ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")
        raise OutputError(f"--out {out} already holds a run ({shown}): add --resume to continue it, "
                          "--overwrite to replace it, or choose another --out")
    return out


def clean_stale_temp(out: Path) -> list[Path]:
    """Remove ``*.tmpPID`` files of earlier runs that were killed while saving (call with the lock held)."""
    removed = []
    for p in out.iterdir():
        if _TMP.match(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


@contextlib.contextmanager
def open_run_dir(out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
                 is_main: bool = True) -> Iterator[Path]:
    """Check, create and lock ``out`` for the duration of a training run; yields the folder.

    Only the main process (rank 0) creates and locks the folder; every rank runs the same check so
    all of them refuse together.
    """
    out = check_run_dir(out, resume, overwrite)
    if not is_main:
        yield out
        return
    check_writable_dir(out)
    lock_file = open(out / LOCK_NAME, "a+")
    try:
        try:
            import fcntl

            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no advisory locks, run unlocked
            pass
        except OSError:
            raise OutputError(f"--out {out} is in use by another dlkit run; wait for it or choose another --out") from None
        clean_stale_temp(out)
        yield out
    finally:
        lock_file.close()


def clear_snapshots(out: str | os.PathLike) -> None:
    """Remove ``OUT/snapshots/step-*.safetensors`` of an earlier run (a new run, not ``--resume``; rank 0)."""
    for old in (Path(out) / SNAPSHOTS).glob("step-*.safetensors"):
        old.unlink()


def write_snapshot(out: str | os.PathLike, step: int, state_dict: dict, meta: dict, dtype: str | None) -> Path:
    """``OUT/snapshots/step-NNNNNNN.safetensors``: a model file of its own, as of ``step`` (rank 0 calls this)."""
    from dlkit.core.modelfile import save_model

    path = Path(out) / SNAPSHOTS / f"step-{step:07d}.safetensors"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create '{path.parent}': {e.strerror or e}") from None
    return save_model(path, state_dict, meta, dtype=dtype)
