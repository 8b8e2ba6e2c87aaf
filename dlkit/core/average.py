"""Weight averaging of model files: several snapshots of one run (or runs of one architecture) made into one.

Checkpoint averaging is how Vaswani et al. (2017) finished their Transformers, and the uniform average of a GAN
generator's late snapshots is Yazici et al.'s (2019) "moving average" of the weights: it removes the step-to-step
jitter that an exponential average with a short horizon keeps. dlkit's model files carry their whole config, so
any task's files can be averaged when they describe the same network (same task, config, vocabulary, tensors).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dlkit.core.errors import ModelFileError, UsageError

# Metadata that describes one training run rather than the network; it may differ between averaged files.
RUN_KEYS = frozenset({"aliases", "format", "headline", "int8", "metrics", "training", "recipe", "averaged"})


def _first_difference(a: Any, b: Any) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return str(k)
            if json.dumps(a[k], sort_keys=True) != json.dumps(b[k], sort_keys=True):
                inner = _first_difference(a[k], b[k])
                return f"{k}.{inner}" if inner else str(k)
    return ""


def check_compatible(metas: list[dict], shapes: list[dict], names: list[str]) -> None:
    """One line naming the first way a file differs from the first one (network metadata, tensors, shapes)."""
    base = {k: v for k, v in metas[0].items() if k not in RUN_KEYS}
    for meta, shp, name in zip(metas[1:], shapes[1:], names[1:]):
        if meta.get("task") != metas[0].get("task"):
            raise ModelFileError(f"cannot average a '{meta.get('task')}' model ('{name}') with a "
                                 f"'{metas[0].get('task')}' model ('{names[0]}')")
        other = {k: v for k, v in meta.items() if k not in RUN_KEYS}
        if json.dumps(other, sort_keys=True) != json.dumps(base, sort_keys=True):
            raise ModelFileError(f"'{name}' and '{names[0]}' are different networks (their metadata differs in "
                                 f"'{_first_difference(base, other)}'); only files of one architecture and "
                                 "vocabulary can be averaged")
        if set(shp) != set(shapes[0]):
            k = sorted(set(shp) ^ set(shapes[0]))[0]
            raise ModelFileError(f"'{name}' and '{names[0]}' hold different tensors (e.g. '{k}')")
        for k, s in shp.items():
            if tuple(s) != tuple(shapes[0][k]):
                raise ModelFileError(f"'{name}' stores '{k}' as {list(s)} but '{names[0]}' as {list(shapes[0][k])}")


def stored_dtype(meta: dict, header: dict) -> str:
    """The ``--save-dtype`` a file was written with (int8, fp16 or fp32), read from its header."""
    if meta.get("int8"):
        return "int8"
    floats = [v["dtype"] for k, v in header.items() if k != "__metadata__" and v["dtype"].startswith(("F", "BF"))]
    return "fp16" if floats and all(d == "F16" for d in floats) else "fp32"


def average_files(paths: list[Path], weights: list[float] | None = None) -> tuple[dict, dict, str]:
    """``(state_dict, meta, dtype)`` of the (weighted) mean of ``paths``' floating tensors, computed in float64.

    Integer tensors (e.g. BatchNorm's step counters) come from the last file. The metadata is the last file's
    (its config and the recipe that made it), with the inputs listed under ``averaged`` and no metrics: the
    inputs' scores do not describe the average. ``dtype`` is the first file's storage type."""
    import torch

    from dlkit.core.modelfile import load_model_file, read_header, read_meta, stored_shapes

    if len(paths) < 2:
        raise UsageError("give at least two model files to average")
    weights = list(weights) if weights is not None else [1.0] * len(paths)
    if len(weights) != len(paths):
        raise UsageError(f"{len(weights)} weights for {len(paths)} model files; give one per file")
    if any(not (w >= 0) for w in weights) or sum(weights) <= 0:
        raise UsageError("averaging weights must be >= 0 and not all 0")
    names = [os.fspath(p) for p in paths]
    headers = [read_header(p) for p in paths]
    metas = [read_meta(p) for p in paths]
    check_compatible(metas, [stored_shapes(p, h, m) for p, h, m in zip(paths, headers, metas)], names)
    dtype = stored_dtype(metas[0], headers[0])
    total = float(sum(weights))
    acc: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    for p, w in zip(paths, weights):
        tensors, _ = load_model_file(p)
        for k, t in tensors.items():
            if t.is_floating_point():
                acc[k] = acc.get(k, 0) + t.to(torch.float64) * (w / total)
            else:
                last[k] = t
    state = {k: v.to(torch.float32) for k, v in acc.items()} | last
    for alias, target in metas[-1].get("aliases", {}).items():  # tied tensors stay tied (stored once)
        state[alias] = state[target]
    meta = {k: v for k, v in metas[-1].items() if k not in ("aliases", "format", "int8")}
    meta["averaged"] = [{"file": Path(n).name, "weight": w / total,
                         "steps": (m.get("training") or {}).get("steps")} for n, w, m in zip(names, weights, metas)]
    meta["metrics"] = {}
    meta["headline"] = f"average of {len(paths)} models: {metas[-1].get('headline') or metas[-1].get('task')}"
    return state, meta, dtype


def has_batchnorm_statistics(state: dict) -> bool:
    return any(k.endswith("running_mean") or k.endswith("running_var") for k in state)
