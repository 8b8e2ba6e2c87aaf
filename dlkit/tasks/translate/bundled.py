"""Which bundled model ``dlkit translate`` uses: ``--to LANG`` (default fr) picks the general English->LANG model,
or its Multi30k model while the general one is not installed. Imports no torch."""

from __future__ import annotations

from typing import Callable

from dlkit.core.errors import UsageError
from dlkit.core.zoo import find_model

GENERAL = {"fr": "en-fr", "de": "en-de"}  # everyday text: Tatoeba + WMT news + Multi30k
MULTI30K = {"fr": "multi30k-en-fr", "de": "multi30k-en-de"}  # image descriptions only (the papers' protocol)
DEFAULT_TO = "fr"


def default_model(to: str | None = None, find: Callable[[str], object] = find_model) -> str:
    """The model name for English -> ``to``: the general model when it is found ($DLKIT_HOME/models or the zoo),
    else the Multi30k one (no error: older installs bundle only those)."""
    lang = (to or DEFAULT_TO).strip().lower()
    if lang not in GENERAL:
        raise UsageError(f"--to {to}: the bundled models translate English into {' or '.join(GENERAL)}; "
                         "give --model NAME|FILE for other languages")
    return GENERAL[lang] if find(GENERAL[lang]) is not None else MULTI30K[lang]
