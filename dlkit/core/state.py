"""The resumable training state: ``<name>.state.pt`` beside the model (optimizer, step, RNG).

Read with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only. The file
carries its layout version and its task, so a state of another task or a newer dlkit is refused with
one line. Writes are atomic (:mod:`dlkit.core.atomic`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from dlkit.core.atomic import atomic_write_bytes
from dlkit.core.errors import ModelFileError, UsageError


def state_path(model_path: str | os.PathLike) -> Path:
    p = Path(model_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".state.pt")


STATE_FORMAT = 1  # version of the training-state layout; older states are upgraded on load


def save_state(path: str | os.PathLike, state: dict[str, Any], task: str | None = None) -> Path:
    """Resumable training state (tensors, numbers, strings, lists, dicts only), written atomically.

    The file carries ``state_format`` (:data:`STATE_FORMAT`) and ``task`` so that :func:`load_state` can
    refuse a state of another task or a newer dlkit with one line."""
    import torch

    buf = io.BytesIO()
    torch.save({**state, "state_format": STATE_FORMAT, "task": task if task is not None else state.get("task")}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_state(path: str | os.PathLike, task: str | None = None, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a training state with ``torch.load(weights_only=True)`` and check its version, task and keys.

    Every failure is one :class:`ModelFileError` line. Torch's own advice for unsafe files (re-running with
    ``weights_only=False``, i.e. unpickling arbitrary code) is never passed on."""
    import torch

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"no training state at '{path}' to resume from")
    if path.is_dir():
        raise ModelFileError(f"training state '{path}' is a folder")
    try:
        import warnings

        with warnings.catch_warnings():  # torch's pickle-protocol warning would print before our refusal
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise ModelFileError(f"training state '{path}' cannot be read safely: {_safe_reason(e)}") from None
    if not isinstance(state, dict):
        raise ModelFileError(f"training state '{path}' is a {type(state).__name__}, not a dlkit training state")
    version = state.get("state_format", 0)
    if not isinstance(version, int) or version > STATE_FORMAT:
        raise ModelFileError(f"training state '{path}' has format {version}; this dlkit reads up to {STATE_FORMAT}: "
                             "upgrade dlkit")
    saved_task = state.get("task")
    if task is not None and saved_task is not None and saved_task != task:
        raise ModelFileError(f"training state '{path}' was saved by a '{saved_task}' run; a '{task}' run cannot "
                             "resume it (choose another --out)")
    missing = [k for k in required if k not in state]
    if missing:
        raise ModelFileError(f"training state '{path}' is incomplete (no {', '.join(missing)})")
    return state


def _safe_reason(e: Exception) -> str:
    """The first useful line of a torch.load error, without its advice to disable ``weights_only``."""
    text = str(e).strip()
    if "weights_only" in text or "Weights only load failed" in text or "WeightsUnpickler" in text:
        return "it holds objects other than tensors and plain values (dlkit never unpickles them)"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[0][:200] if lines else type(e).__name__)


def check_resume(saved_cfg: dict[str, Any], new_cfg: dict[str, Any], keys, path: str | os.PathLike | None = None) -> None:
    """Refuse ``--resume`` when settings that decide tensor shapes differ from the saved run's.

    ``keys`` are config field names (``preset``, ``block_size``...); each is shown as its option
    (``--block-size``). A key the saved config lacks is not compared (older states)."""
    diffs = [(k, saved_cfg[k], new_cfg.get(k)) for k in keys
             if k in saved_cfg and saved_cfg[k] != new_cfg.get(k)]
    if not diffs:
        return
    shown = "; ".join(f"--{k.replace('_', '-')} {_opt(new)} (the run used {_opt(old)})" for k, old, new in diffs)
    where = f" in '{path}'" if path else ""
    raise UsageError(f"cannot --resume the run{where} with other shape settings: {shown}; "
                     "resume with the run's settings or train into another --out")


def _opt(v: Any) -> str:
    return "(default)" if v is None else str(v)
