"""Text lines from untrusted sources with bounded memory: stdin, FIFOs, command-line arguments.

* :func:`bounded_lines` reads a byte stream in chunks and yields each line cut to ``max_chars``: a 100 MB
  line costs ``max_chars`` bytes of memory, not 100 MB (the rest of the line is read and dropped), and
  a stream of many lines is never read ahead. Bytes that are not UTF-8 become U+FFFD with one warning.
* :func:`clean_args` does the same for command-line arguments (Python hands undecodable bytes of
  ``argv`` over as lone surrogates, which would fail later when printed).
* :func:`count_lines` counts the lines left in a seekable regular file (for a progress total) and
  rewinds it.
"""

from __future__ import annotations

import codecs
import io
import os
import stat
import sys
from typing import Callable, Iterable, Iterator

CHUNK = 1 << 16

Warn = Callable[[str], None]


def bounded_lines(stream=None, max_chars: int | None = None, warn: Warn | None = None,
                  on_cut: Callable[[int], None] | None = None) -> Iterator[str]:
    """Lines of a binary stream (default stdin) without their line ends, each cut to ``max_chars``.

    ``on_cut(n_bytes)`` is called for each cut line with its full length in bytes (default: one warning,
    :func:`cut_message`, for the first cut line)."""
    stream = stream if stream is not None else sys.stdin.buffer
    limit = max_chars * 4 if max_chars else None  # UTF-8: at most 4 bytes a character
    state = {"bad": False}
    on_cut = on_cut or warn_once(lambda n: warn and warn(cut_message(n, max_chars)))
    while True:
        raw = stream.readline(limit + 1 if limit else -1)
        if not raw:
            return
        total = len(raw)
        if limit and len(raw) > limit and not raw.endswith(b"\n"):
            while True:  # drop the rest of the line, a chunk at a time
                rest = stream.readline(CHUNK)
                total += len(rest) - rest.endswith(b"\n")
                if not rest or rest.endswith(b"\n"):
                    break
            line = _decode(raw[:limit], state, warn, final=False)[:max_chars]
            on_cut(total)
        else:
            line = _decode(raw, state, warn).rstrip("\r\n")
            if max_chars and len(line) > max_chars:
                line = line[:max_chars]
                on_cut(total - raw.endswith(b"\n"))
        yield line


def cut_message(n_bytes: int, max_chars: int) -> str:
    return (f"a line of {n_bytes:,} bytes was cut to its first {max_chars:,} characters "
            "(further long lines are cut silently)")


def warn_once(warn: Callable) -> Callable:
    """``warn`` for the first call only (one message for a class of events, e.g. every cut line)."""
    done = []

    def once(*args) -> None:
        if not done:
            done.append(True)
            warn(*args)

    return once


def _decode(raw: bytes, state: dict, warn: Warn | None, final: bool = True) -> str:
    """UTF-8 with bad bytes replaced (one warning per stream); ``final=False`` drops a character cut in half."""
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = dec.decode(raw, final=final)
    if not state["bad"] and "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
        state["bad"] = True
        if warn:
            warn("input holds bytes that are not UTF-8; they were replaced with U+FFFD")
    return text


def clean_args(args: Iterable[str], max_chars: int | None = None, warn: Warn | None = None) -> list[str]:
    """Command-line arguments as clean UTF-8 (undecodable bytes -> U+FFFD, one warning), each cut to ``max_chars``."""
    out, warned, cut = [], False, False
    for a in args:
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            a = a.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if _escaped_only(a) else \
                a.encode("utf-8", "replace").decode("utf-8")
            if warn and not warned:
                warn("an argument holds bytes that are not UTF-8; they were replaced with U+FFFD")
                warned = True
        if max_chars and len(a) > max_chars:
            if warn and not cut:
                warn(f"an argument of {len(a):,} characters was cut to its first {max_chars:,} "
                     "(further long arguments are cut silently)")
                cut = True
            a = a[:max_chars]
        out.append(a)
    return out


def _escaped_only(a: str) -> bool:
    """Whether the only unencodable characters are surrogateescape's (U+DC80..U+DCFF)."""
    try:
        a.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def count_lines(stream=None) -> int | None:
    """Lines left in ``stream`` (default stdin) when it is a seekable regular file, else ``None``; rewinds."""
    stream = stream if stream is not None else sys.stdin.buffer
    try:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            return None
        pos = stream.tell()
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return None
    n, last = 0, b"\n"
    while chunk := stream.read(1 << 20):
        n += chunk.count(b"\n")
        last = chunk[-1:]
    stream.seek(pos)
    return n + (last != b"\n")
