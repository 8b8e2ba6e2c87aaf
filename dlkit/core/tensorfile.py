"""Reading a foreign file of tensors (a ``.pth``/``.pt`` state_dict or a ``.safetensors``), never unpickling.

* ``load_tensors(path, what="weights file", error=ModelFileError) -> dict[str, Tensor]``: a regular file
  (no FIFO), read with ``safetensors`` or ``torch.load(weights_only=True)``. Torch's warnings while reading
  (e.g. "Detected pickle protocol 4") are held back and its advice to re-run with ``weights_only=False``
  (arbitrary code execution) never reaches the user: a refusal says what the file is instead.
* ``safe_reason(exc) -> str``: that one sentence for any exception torch raised while loading.

For dlkit's own model files use :mod:`dlkit.core.loader`; this module is for weights made elsewhere.
"""

from __future__ import annotations

import os
import warnings

from dlkit.core.errors import ModelFileError
from dlkit.core.io import quote, regular_file

_UNSAFE = ("weights_only", "Weights only load failed", "WeightsUnpickler", "Unpickler", "allow_pickle", "GLOBAL")


def safe_reason(e: BaseException) -> str:
    """The first useful line of a loading error, with no advice to turn off the safe loader."""
    text = str(e).strip()
    if any(k in text for k in _UNSAFE):
        return "it holds Python objects other than tensors and plain values (dlkit never unpickles them)"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return quote(lines[0], 160) if lines else type(e).__name__


def load_tensors(path: str | os.PathLike, what: str = "weights file", error: type = ModelFileError) -> dict:
    """A flat ``{name: tensor}`` from ``path`` (a ``{"state_dict": {...}}`` wrapper is unwrapped)."""
    import torch

    p = regular_file(path, what, error)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol warnings would print before our refusal
            if p.suffix == ".safetensors":
                from safetensors.torch import load_file

                sd = load_file(str(p))
            else:
                sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch/safetensors raise many types for bad files
        raise error(f"{what} '{quote(p)}' cannot be read safely: {safe_reason(e)}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise error(f"{what} '{quote(p)}' is not a state_dict (a table of named tensors)")
    return sd


def nonfinite(sd: dict) -> list[str]:
    """Names of floating tensors in ``sd`` holding NaN or inf (a damaged or crafted file)."""
    import torch

    return [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
