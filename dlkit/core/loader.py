"""The one model loader: a name or path -> a built, checked module in eval mode.

It lives apart from :mod:`dlkit.core.modelfile` because it resolves names through :mod:`dlkit.core.zoo`,
which itself reads model headers: format -> zoo -> loader, no import circle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from dlkit.core.errors import ModelFileError
from dlkit.core.modelfile import _meta_of, check_shapes, load_model_file, read_header, stored_shapes
from dlkit.core.zoo import resolve_model


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


def model_arch(spec: str | os.PathLike | None, task: str) -> str | None:
    """The ``arch`` in the metadata of a model (bundled NAME, $DLKIT_HOME name or path), or None when there is
    none or it cannot be read: for choices made before loading (e.g. --precision auto for an --init model); the
    load itself reports a bad file, in one line."""
    if not spec:
        return None
    try:
        path = resolve_model(str(spec), task)
        return _meta_of(read_header(path), path, task).get("arch")
    except Exception:  # noqa: BLE001 - see the docstring
        return None


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
