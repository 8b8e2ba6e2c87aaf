"""Finding models by name or path: the bundled zoo and ``$DLKIT_HOME/models``. Imports no torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dlkit.core.modelfile import INT8_SCALE_SUFFIX, read_header, read_meta
from dlkit.core.errors import DlkitError, ModelFileError

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"


def home_dir() -> Path:
    return Path(os.environ.get("DLKIT_HOME", Path.home() / ".dlkit"))


def search_dirs() -> list[tuple[str, Path]]:
    return [("home", home_dir() / "models"), ("bundled", ZOO_DIR)]


def resolve_model(spec: str, task: str | None = None) -> Path:
    """A path to an existing file, or a model NAME looked up in $DLKIT_HOME/models then the zoo."""
    p = Path(spec).expanduser()
    if p.exists() or spec.endswith(".safetensors") or os.sep in spec or "/" in spec:
        if not p.exists():
            raise ModelFileError(f"model file '{spec}' does not exist", exit_code=2)  # a usage error
        return p
    found = find_model(spec)
    if found is not None:
        return found
    names = [m["name"] for m in list_models() if task is None or m.get("task") == task]
    hint = f"; available: {', '.join(names)}" if names else ""
    raise ModelFileError(f"no model named '{spec}'{hint} (see `dlkit models`)")


def find_model(name: str) -> Path | None:
    """The file of model NAME in $DLKIT_HOME/models, else in the zoo; None when neither has it."""
    for _, d in search_dirs():
        cand = d / f"{name}.safetensors"
        if cand.exists():
            return cand
    return None


def card_path(model_path: Path) -> Path:
    return model_path.with_suffix(".md")


def describe(path: Path, where: str) -> dict[str, Any]:
    """One row of `dlkit models`: name, task, parameters, size, data and headline metric."""
    header = read_header(path)
    meta = read_meta(path)
    training = meta.get("training")
    params, scales = 0, {n + INT8_SCALE_SUFFIX for n in meta.get("int8", [])}
    for k, v in header.items():
        if k == "__metadata__" or k in meta.get("aliases", {}) or k in scales:
            continue
        n = 1
        for d in v["shape"]:
            n *= d
        params += n
    return {
        "name": path.name.removesuffix(".safetensors"),
        "where": where,
        "path": str(path),
        "task": meta.get("task"),
        "arch": meta.get("arch"),
        "parameters": params,
        "size_bytes": path.stat().st_size,
        "data": training.get("data") if isinstance(training, dict) else None,
        "metric": meta.get("headline") if isinstance(meta.get("headline"), str) else None,
        "card": str(card_path(path)) if card_path(path).exists() else None,
    }


def list_models() -> list[dict[str, Any]]:
    """Every model found, bundled and in $DLKIT_HOME/models. A file that cannot be read (broken metadata,
    no permission) becomes a row with an ``error`` instead of breaking the listing for every other model."""
    rows = []
    for where, d in search_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.safetensors")):
            try:
                rows.append(describe(p, where))
            except (DlkitError, OSError) as e:
                rows.append({"name": p.stem, "where": where, "path": str(p), "error": str(e)})
    return rows
