"""The one model format and the resumable training state.

A model is one ``.safetensors`` file. Its metadata key ``dlkit`` holds JSON with everything inference
needs: ``task``, ``format`` (version), ``arch``/``config``, tokenizer or vocabulary, training summary,
metrics and recipe. Loading never unpickles: the header is checked by hand before safetensors reads
tensors. Training state for ``--resume`` (optimizer, step, RNG) sits beside the model as
``<name>.state.pt`` and is read with ``torch.load(weights_only=True)``. Every write is atomic.
"""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path
from typing import Any, Callable

from dlkit.core.errors import ModelFileError, OutputError

FORMAT_VERSION = 1
_META_KEY = "dlkit"


# ---------------------------------------------------------------- atomic writes
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


# ---------------------------------------------------------------- header (no torch)
def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a safetensors file by hand and return its parsed header; never unpickles."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file '{path}' does not exist")
    if path.is_dir():
        raise ModelFileError(f"'{path}' is a folder, not a model file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"model file '{path}' is empty or truncated ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        pickled = head[:2] == b"PK" or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05")
        if n < 2 or n > 100_000_000 or n + 8 > size:
            if pickled:
                raise ModelFileError(
                    f"'{path}' is a pickle/PyTorch checkpoint, not a .safetensors model; dlkit never loads pickles"
                )
            raise ModelFileError(f"'{path}' is not a valid .safetensors file (bad or truncated header)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"'{path}' is not a valid .safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"'{path}' is not a valid .safetensors file (unreadable header)")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ModelFileError(f"model file '{path}' is truncated ({size} of {8 + n + end} bytes)")
    return header


def read_meta(path: str | os.PathLike, task: str | None = None) -> dict[str, Any]:
    """The dlkit metadata of a model file, checked for format version and (optionally) task."""
    header = read_header(path)
    raw = (header.get("__metadata__") or {}).get(_META_KEY)
    if raw is None:
        raise ModelFileError(f"'{path}' is a .safetensors file but not a dlkit model (no dlkit metadata)")
    meta = json.loads(raw)
    version = meta.get("format", 0)
    if version > FORMAT_VERSION:
        raise ModelFileError(f"'{path}' uses model format {version}; this dlkit reads up to {FORMAT_VERSION}: upgrade dlkit")
    if task is not None and meta.get("task") != task:
        raise ModelFileError(f"'{path}' is a '{meta.get('task')}' model; this command needs a '{task}' model")
    return meta


# ---------------------------------------------------------------- models
def save_model(path: str | os.PathLike, state_dict: dict, meta: dict[str, Any], dtype=None) -> Path:
    """Save tensors + metadata atomically. Tied (shared) tensors are stored once and re-linked on load.

    ``dtype`` (e.g. torch.float16) converts floating tensors, which is how bundled models stay small."""
    from safetensors.torch import save

    tensors, aliases, seen = {}, {}, {}
    for name, t in state_dict.items():
        key = (t.data_ptr(), t.shape, t.dtype) if t.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        t = t.detach().cpu().contiguous()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.clone() if t.numel() == 0 else t
    meta = {**meta, "format": FORMAT_VERSION, "aliases": aliases}
    data = save(tensors, metadata={_META_KEY: json.dumps(meta, default=_json_default)})
    return atomic_write_bytes(path, data)


def load_model_file(path: str | os.PathLike, task: str | None = None):
    """Return ``(state_dict, meta)`` from a dlkit model file, after checking it (see :func:`read_meta`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_meta(path, task)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"'{path}' could not be read as .safetensors: {e}") from None
    for alias, target in meta.get("aliases", {}).items():
        tensors[alias] = tensors[target]
    return tensors, meta


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------- training state
def state_path(model_path: str | os.PathLike) -> Path:
    p = Path(model_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".state.pt")


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Resumable training state (tensors, numbers, strings, lists, dicts only), written atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    import torch

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"no training state at '{path}' to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"training state '{path}' cannot be read safely: {first}") from None
