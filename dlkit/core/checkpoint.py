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


def stored_shapes(path: str | os.PathLike, header: dict[str, Any] | None = None,
                  meta: dict[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a model file holds (tied aliases included), read from the header only."""
    header = header if header is not None else read_header(path)
    meta = meta if meta is not None else _meta_of(header, path, None)
    shapes = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
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


def _budget_mode(limit: int, max_tensors: int):
    """A TorchFunctionMode that stops module construction once the tensors created exceed ``limit``
    elements or ``max_tensors`` tensors (the second bounds the Python module objects of many tiny layers).

    This is what makes building from an untrusted config safe: a file whose metadata claims
    ``n_layer=100000`` is refused after allocating about as much as the file really stores."""
    import torch
    from torch.overrides import TorchFunctionMode

    try:  # the factory functions torch.device(...) contexts redirect; private, so with a fallback
        from torch.utils._device import _device_constructors

        constructors = _device_constructors()
    except (ImportError, AttributeError):  # pragma: no cover - depends on the torch version
        constructors = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint,
                        torch.tensor, torch.arange, torch.eye, torch.linspace}

    class Budget(TorchFunctionMode):
        used = 0
        count = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in constructors and isinstance(out, torch.Tensor):
                self.used += out.numel()
                self.count += 1
                if self.used > limit or self.count > max_tensors:
                    raise _OverBudget(self.used)
            return out

    return Budget()


class _OverBudget(BaseException):  # not an Exception: a build's own `except Exception` must not swallow it
    pass


def load_model(spec: str | os.PathLike, task: str, build: Callable[[dict[str, Any]], Any], device="cpu"):
    """The one model loader: ``spec`` (bundled NAME, $DLKIT_HOME name or path) -> ``(model, meta)``.

    Steps, each failing with one line (:class:`ModelFileError`) instead of a traceback or a huge allocation:
    resolve ``spec`` (:func:`dlkit.core.zoo.resolve_model`); validate the header and the metadata (JSON,
    format, task); call ``build(meta) -> nn.Module`` under an allocation budget of about twice the
    elements and four times the tensors the file stores (a config claiming far more is refused before
    memory grows); compare the built module's tensor names and shapes with the stored ones
    (:func:`check_shapes`); read the tensors and load them strictly (stored fp16 is converted to the module's dtype). ``build`` may raise
    :class:`ModelFileError` (e.g. from :func:`dlkit.core.config.config_from_dict`) or any
    TypeError/ValueError/KeyError for a config it cannot build; both become one line naming the file.
    The model comes back in eval mode on ``device``; ``meta`` gains ``name`` and ``path``.
    """
    import torch

    from dlkit.core.zoo import resolve_model

    path = resolve_model(str(spec), task)
    header = read_header(path)
    meta = _meta_of(header, path, task)
    stored = stored_shapes(path, header, meta)
    real = {k: v for k, v in stored.items() if k not in meta.get("aliases", {})}
    n_stored = sum(_numel(s) for s in real.values())
    try:
        with _budget_mode(2 * n_stored + BUILD_SLACK_ELEMENTS, 4 * len(real) + BUILD_SLACK_TENSORS):
            model = build(meta)
    except _OverBudget:
        raise ModelFileError(f"'{path}' does not match its own config: the config describes a model far larger "
                             f"than the {n_stored:,} values the file stores") from None
    except ModelFileError as e:
        raise ModelFileError(f"'{path}' is not a usable {task} model: {e}") from None
    except (TypeError, ValueError, KeyError, AttributeError, AssertionError, RuntimeError, OverflowError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"'{path}' is not a usable {task} model: its config cannot be built ({first[:160]})") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_shapes(expected, stored, path)
    tensors, _ = load_model_file(path, task)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:  # e.g. a dtype that cannot be copied; shapes were checked above
        raise ModelFileError(f"'{path}' could not be loaded: {str(e).strip().splitlines()[0][:200]}") from None
    meta = {**meta, "name": Path(path).name.removesuffix(".safetensors"), "path": str(path)}
    return model.to(torch.device(device) if isinstance(device, str) else device).eval(), meta


BUILD_SLACK_ELEMENTS = 16_000_000  # non-persistent buffers (masks, positional tables) a model may add
BUILD_SLACK_TENSORS = 1024  # and the temporary tensors of its initialisation


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


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
        raise ModelFileError(f"training state '{path}' belongs to a '{saved_task}' run, not '{task}'")
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
    from dlkit.core.errors import UsageError

    raise UsageError(f"cannot --resume the run{where} with other shape settings: {shown}; "
                     "resume with the run's settings or train into another --out")


def _opt(v: Any) -> str:
    return "(default)" if v is None else str(v)
