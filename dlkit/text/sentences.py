"""Sentence splitting for models trained on one sentence per line (translation).

``split_sentences("A dog runs. A cat sleeps.", "en") -> ["A dog runs.", "A cat sleeps."]``

The splitter is `sentencex <https://pypi.org/project/sentencex/>`_ (Wikimedia; MIT; rule-based with
per-language abbreviation lists for ~300 languages, a compiled extension without dependencies or data
downloads). Unknown language codes fall back to its generic rules. Abbreviations, initials and
decimals ("Mr. Smith", "E.S.E. Electronics", "3.5 kg") do not end a sentence.
"""

from __future__ import annotations

from dlkit.core.errors import DlkitError

_NO_SPACE = {"zh", "ja", "yue", "wuu", "lzh"}  # scripts written without spaces between sentences


def split_sentences(text: str, lang: str = "en") -> list[str]:
    """The sentences of ``text`` (stripped, none empty); ``[]`` for blank text."""
    if not text.strip():
        return []
    try:
        import sentencex
    except ImportError:  # pragma: no cover - a declared dependency
        raise DlkitError("sentence splitting needs the 'sentencex' package: pip install sentencex") from None
    parts = [s.strip() for s in sentencex.segment(lang or "en", text)]
    return [s for s in parts if s] or [text.strip()]


def join_sentences(parts: list[str], lang: str = "en") -> str:
    """Sentences back into one line: a space between them, none for Chinese/Japanese."""
    sep = "" if (lang or "").split("-")[0].lower() in _NO_SPACE else " "
    return sep.join(p for p in parts if p)
