"""The one model format: a ``.safetensors`` file with dlkit metadata.

The metadata key ``dlkit`` holds JSON with everything inference needs: ``task``, ``format`` (version),
``arch``/``config``, tokenizer or vocabulary, training summary, metrics and recipe. Reading never
unpickles: the header is checked by hand before safetensors reads tensors. Writes are atomic
(:mod:`dlkit.core.atomic`). Building a module from a file's config is :func:`dlkit.core.loader.load_model`.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from dlkit.core.atomic import atomic_write_bytes
from dlkit.core.errors import ModelFileError

FORMAT_VERSION = 1
_META_KEY = "dlkit"
INT8_SCALE_SUFFIX = ".int8_scale"  # the per-row scales of an int8-stored tensor (meta["int8"] lists those)
INT8_MIN_ELEMENTS = 1024  # smaller matrices stay fp16: their scales would cost more than int8 saves


# ---------------------------------------------------------------- header (no torch)
def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a safetensors file by hand and return its parsed header; never unpickles."""
    path = Path(path)
    from dlkit.core.io import regular_file

    regular_file(path, "model file", ModelFileError)  # missing, a folder, a FIFO (would hang): exit 2
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
    end = 0
    for k, v in header.items():
        if k == "__metadata__":
            if v is not None and not (isinstance(v, dict) and all(isinstance(x, str) for x in v.values())):
                raise ModelFileError(f"'{path}' is not a valid .safetensors file (its metadata is not a table of strings)")
            continue
        if not _valid_entry(v):
            raise ModelFileError(f"'{path}' is not a valid .safetensors file (header entry '{str(k)[:60]}' is malformed)")
        end = max(end, v["data_offsets"][1])
    if 8 + n + end > size:
        raise ModelFileError(f"model file '{path}' is truncated ({size} of {8 + n + end} bytes)")
    return header


def _valid_entry(v: Any) -> bool:
    """A tensor entry: {"dtype": str, "shape": [int >= 0, ...], "data_offsets": [begin, end]}."""
    if not isinstance(v, dict):
        return False
    shape, offs = v.get("shape"), v.get("data_offsets")
    return (isinstance(v.get("dtype"), str) and isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            and isinstance(offs, list) and len(offs) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs) and offs[0] <= offs[1])


def read_meta(path: str | os.PathLike, task: str | None = None) -> dict[str, Any]:
    """The dlkit metadata of a model file, checked for JSON form, format version and (optionally) task."""
    return _meta_of(read_header(path), path, task)


def _meta_of(header: dict[str, Any], path, task: str | None) -> dict[str, Any]:
    raw = (header.get("__metadata__") or {}).get(_META_KEY)
    if raw is None:
        raise ModelFileError(f"'{path}' is a .safetensors file but not a dlkit model (no dlkit metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelFileError(f"'{path}' has broken dlkit metadata (not JSON: {e.msg} at character {e.pos})") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"'{path}' has broken dlkit metadata (a {type(meta).__name__}, not a table)")
    version = meta.get("format", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"'{path}' has broken dlkit metadata (format {str(version)[:20]!r} is not a number)")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"'{path}' uses model format {version}; this dlkit reads up to {FORMAT_VERSION}: upgrade dlkit")
    if not isinstance(meta.get("task"), (str, type(None))):
        raise ModelFileError(f"'{path}' has broken dlkit metadata (task is not a name)")
    if task is not None and meta.get("task") != task:
        raise ModelFileError(f"'{path}' is a '{meta.get('task')}' model; this command needs a '{task}' model")
    aliases = meta.get("aliases", {})
    tensors = [k for k in header if k != "__metadata__"]
    if not isinstance(aliases, dict) or any(not isinstance(t, str) or t not in tensors for t in aliases.values()):
        raise ModelFileError(f"'{path}' has broken dlkit metadata (aliases name tensors the file does not hold)")
    int8 = meta.get("int8", [])
    if not isinstance(int8, list) or any(not isinstance(t, str) or t not in header or header[t].get("dtype") != "I8"
                                         or t + INT8_SCALE_SUFFIX not in header
                                         or header[t + INT8_SCALE_SUFFIX]["shape"] != header[t]["shape"][:1]
                                         for t in int8):
        raise ModelFileError(f"'{path}' has broken dlkit metadata (its int8 list names tensors stored otherwise)")
    return meta


# ---------------------------------------------------------------- tensors
def save_model(path: str | os.PathLike, state_dict: dict, meta: dict[str, Any], dtype=None) -> Path:
    """Save tensors + metadata atomically. Tied (shared) tensors are stored once and re-linked on load.

    ``dtype`` converts floating tensors, which is how bundled models stay small: a torch dtype, or the
    ``--save-dtype`` value every training command takes ("fp16"; "fp32" keeps them; "int8" stores each weight
    matrix as int8 with one fp16 scale per row, see :func:`quantize_int8`, and the rest as fp16)."""
    import torch
    from safetensors.torch import save

    int8 = dtype == "int8"
    if isinstance(dtype, str):
        dtype = {"fp32": None, "fp16": torch.float16, "int8": torch.float16}[dtype]

    tensors, aliases, seen, quantized = {}, {}, {}, []
    for name, t in state_dict.items():
        key = (t.data_ptr(), t.shape, t.dtype) if t.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        t = t.detach().cpu().contiguous()
        if int8 and t.is_floating_point() and t.dim() >= 2 and t.numel() >= INT8_MIN_ELEMENTS:
            tensors[name], tensors[name + INT8_SCALE_SUFFIX] = quantize_int8(t)
            quantized.append(name)
            continue
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.clone() if t.numel() == 0 else t
    meta = {**meta, "format": FORMAT_VERSION, "aliases": aliases}
    if quantized:
        meta["int8"] = quantized
    data = save(tensors, metadata={_META_KEY: json.dumps(meta, default=_json_default)})
    return atomic_write_bytes(path, data)


def replace_meta(path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``meta`` as the dlkit metadata of an existing model file, atomically; the stored tensors (int8 ones and
    their scales included) are written back exactly as they are, so figures measured on the file still hold."""
    from safetensors.torch import load_file, save

    raw = read_header(path).get("__metadata__") or {}
    data = save(load_file(path), metadata={**raw, _META_KEY: json.dumps(meta, default=_json_default)})
    return atomic_write_bytes(path, data)


def quantize_int8(t):
    """Symmetric per-row int8: row i is ``q[i] * scale[i]`` with ``scale[i] = max|t[i]| / 127`` (fp16)."""
    import torch

    rows = t.float().reshape(t.shape[0], -1)
    scale = (rows.abs().amax(dim=1) / 127.0).clamp_min(1e-12).to(torch.float16)
    q = torch.round(rows / scale.float()[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(t.shape), scale


def as_stored(t, save_dtype: str):
    """``t`` as a model file written with ``save_dtype`` gives it back (float32), to measure what is saved."""
    if not t.is_floating_point() or save_dtype == "fp32":
        return t.float()
    if save_dtype == "int8" and t.dim() >= 2 and t.numel() >= INT8_MIN_ELEMENTS:
        return dequantize_int8(*quantize_int8(t))
    return t.half().float()


def dequantize_int8(q, scale):
    """The float32 tensor :func:`quantize_int8` stored."""
    import torch

    return (q.to(torch.float32).reshape(q.shape[0], -1) * scale.float()[:, None]).reshape(q.shape)


def load_model_file(path: str | os.PathLike, task: str | None = None):
    """Return ``(state_dict, meta)`` from a dlkit model file, after checking it (see :func:`read_meta`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_meta(path, task)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"'{path}' could not be read as .safetensors: {e}") from None
    for name in meta.get("int8", []):
        tensors[name] = dequantize_int8(tensors[name], tensors.pop(name + INT8_SCALE_SUFFIX))
    for alias, target in meta.get("aliases", {}).items():
        tensors[alias] = tensors[target]
    return tensors, meta


def stored_shapes(path: str | os.PathLike, header: dict[str, Any] | None = None,
                  meta: dict[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a model file holds (tied aliases included), read from the header only."""
    header = header if header is not None else read_header(path)
    meta = meta if meta is not None else _meta_of(header, path, None)
    hidden = {"__metadata__"} | {n + INT8_SCALE_SUFFIX for n in meta.get("int8", [])}
    shapes = {k: tuple(v["shape"]) for k, v in header.items() if k not in hidden}
    for alias, target in meta.get("aliases", {}).items():
        shapes[alias] = shapes[target]
    return shapes


def check_shapes(expected: dict[str, Any], stored: dict[str, Any], path: str | os.PathLike = "model") -> None:
    """Compare the tensors a model needs (name -> shape) with those a file holds; one line on mismatch.

    Tasks can call it with shapes computed from a config (no module built) before anything is allocated;
    :func:`load_model` calls it with the shapes of a model built under an allocation budget."""
    missing = [k for k in expected if k not in stored]
    extra = [k for k in stored if k not in expected]
    wrong = [k for k in expected if k in stored and tuple(expected[k]) != tuple(stored[k])]
    if not (missing or extra or wrong):
        return
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"'{k}' is stored as {list(stored[k])} but its config needs {list(expected[k])}"
                     + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    if missing:
        parts.append(f"{len(missing)} tensor(s) its config needs are missing (e.g. '{missing[0]}')")
    if extra:
        parts.append(f"{len(extra)} stored tensor(s) its config does not use (e.g. '{extra[0]}')")
    raise ModelFileError(f"'{path}' does not match its own config: " + "; ".join(parts))


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
