"""Dataclass configs from untrusted plain values (model metadata, saved training state). Imports no torch.

A model file's metadata is written by dlkit but read from anywhere: a config field of the wrong type
(``"n_layer": "six"``), a missing config or an unknown field must be a one-line :class:`ModelFileError`,
never a ``TypeError`` deep inside a constructor. :func:`config_from_dict` checks every field against the
dataclass's annotations before the dataclass is built.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from dlkit.core.errors import ModelFileError

T = TypeVar("T")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _matches(value: Any, tp) -> bool:
    """Whether a JSON value fits an annotation (int, float, bool, str, Optional/Union, list/tuple/dict)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # an annotation we do not know how to check: let the constructor decide


def config_from_dict(cls: type[T], values: Any, what: str = "config", allow_unknown: bool = False) -> T:
    """Build dataclass ``cls`` from ``values`` after checking that it is a dict, that every key is a
    field (unless ``allow_unknown``) and that every value has the field's type; missing fields take the
    dataclass defaults. Raises :class:`ModelFileError` naming the first bad field."""
    if values is None:
        raise ModelFileError(f"it has no {what}")
    if not isinstance(values, dict):
        raise ModelFileError(f"its {what} is {_type_name(type(values))}, not a table of settings")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown and not allow_unknown:
        raise ModelFileError(f"its {what} has unknown field(s) {', '.join(map(repr, unknown[:5]))}")
    kwargs = {}
    for name, f in fields.items():
        if name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise ModelFileError(f"its {what} lacks the field '{name}'")
            continue
        value = values[name]
        if not _matches(value, hints.get(name, Any)):
            raise ModelFileError(f"its {what} field '{name}' should be {_type_name(hints[name])}, "
                                 f"not {_type_name(type(value))} {str(value)[:40]!r}")
        if hints.get(name) is float and isinstance(value, int):
            value = float(value)
        kwargs[name] = value
    return cls(**kwargs)
