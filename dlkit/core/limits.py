"""Upper bounds for options whose value decides memory or time, refused with the bound and the reason.

* ``at_most(option, value, limit, why) -> None``: ``UsageError`` (exit 2) "--hidden 200,000 is over the
  limit of 4,096: <why>" when ``value > limit`` (None passes: the default applies).
* ``product_at_most(what, value, limit, why, unit="") -> None``: the same for a size computed from several
  options (e.g. ``-n`` x image pixels), worded "``what`` needs ``value`` ``unit``, over the limit of ...".

Bounds are set from the memory a value implies on a machine of a few GB (the reason says how), not from
what is usual: a user who needs more can split the work. Imports no torch.
"""

from __future__ import annotations

from dlkit.core.errors import UsageError


def _fmt(v) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:g}"
    try:
        return f"{int(v):,}"
    except (OverflowError, ValueError):  # inf, nan
        return str(v)


def at_most(option: str, value, limit, why: str) -> None:
    """Refuse ``option value`` above ``limit`` with one line naming the bound and why it exists."""
    if value is not None and not value <= limit:  # `not <=` also refuses NaN
        raise UsageError(f"{option} {_fmt(value)} is over the limit of {_fmt(limit)}: {why}")


def product_at_most(what: str, value: float, limit: float, why: str, unit: str = "") -> None:
    """Refuse a derived size (``what`` names the options, e.g. "-n 100000 with --grid")."""
    if not value <= limit:
        u = f" {unit}" if unit else ""
        raise UsageError(f"{what} needs {_fmt(value)}{u}, over the limit of {_fmt(limit)}{u}: {why}")
