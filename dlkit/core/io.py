"""Guarded input and streamed output: text files, stdin lines, images. Imports no torch."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Iterator

from dlkit.core.errors import DataError, OutputError

_SNIFF = 1 << 16


def is_stream(path: str | os.PathLike) -> bool:
    """A FIFO, ``<(...)`` process substitution (/dev/fd/N), a character device or a socket: data that can be
    read once, front to back, and whose size is unknown (``stat`` says 0)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def check_text_file(path: str | os.PathLike) -> Path:
    """Refuse a missing, empty, binary or non-UTF-8 text file with a one-line reason.

    A stream (FIFO, ``<(...)``) is accepted as it is: peeking would consume it, so its reader checks the
    text as it goes (or spools it first, see :func:`spool_streams`)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file '{p}' does not exist")
    if p.is_dir():
        raise DataError(f"'{p}' is a folder; expected a text file")
    if is_stream(p):
        return p
    if p.stat().st_size == 0:
        raise DataError(f"data file '{p}' is empty")
    try:
        with open(p, "rb") as f:
            head = f.read(_SNIFF)
    except OSError as e:
        raise DataError(f"data file '{p}' cannot be read: {e.strerror}") from None
    if b"\x00" in head:
        raise DataError(f"data file '{p}' looks binary (it holds NUL bytes); expected UTF-8 text")
    try:
        # an incomplete multi-byte character at the cut is fine
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:
            raise DataError(f"data file '{p}' is not UTF-8 text (bad byte at offset {e.start})") from None
    return p


def read_text(path: str | os.PathLike, what: str = "file", errors: str = "strict") -> str:
    """The whole text of a plain or gzipped UTF-8 file (or FIFO); one-line DataErrors for what users get wrong."""
    import gzip

    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} '{p}' does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{what} '{p}' is a folder, not a file") from None
    except OSError as e:
        raise DataError(f"cannot read {what} '{p}': {e.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{what} '{p}' is a damaged gzip file: {e}") from None
    if b"\x00" in raw[:65536]:
        raise DataError(f"{what} '{p}' looks binary (it holds NUL bytes); expected UTF-8 text")
    try:
        return raw.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as e:
        raise DataError(f"{what} '{p}' is not UTF-8 text (bad byte at offset {e.start})") from None


def text_files(path: str | os.PathLike, suffixes=(".txt", ".md", ".text", "")) -> list[Path]:
    """A text file (or stream), or the text files in a folder (sorted, recursive), each checked."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".") and f.suffix in suffixes)
        if not files:
            raise DataError(f"folder '{p}' holds no text files")
        return [check_text_file(f) for f in files]
    return [check_text_file(p)]


def spool_streams(files: list[Path], folder: str | os.PathLike, prefix: str = "stream") -> list[Path]:
    """Copy each stream among ``files`` into ``folder`` (once, in 1 MiB chunks) so that readers needing two
    passes or a size (a tokenizer's vocabulary pass, a memory map) get a regular file; the copy is then
    checked like any text file. Regular files are returned unchanged."""
    out = []
    for i, f in enumerate(files):
        if not is_stream(f):
            out.append(f)
            continue
        target = Path(folder) / f"{prefix}-{i}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(f, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        out.append(check_text_file(target))
    return out


def iter_input_lines(args: list[str] | None, stream=None, warn=None) -> Iterator[str]:
    """Text arguments if given, else stdin line by line (decoded as UTF-8 with bad bytes replaced)."""
    if args:
        yield from args
        return
    stream = stream if stream is not None else sys.stdin.buffer
    warned = False
    for raw in stream:
        if isinstance(raw, str):
            line = raw
        else:
            line = raw.decode("utf-8", errors="replace")
            if "\ufffd" in line and b"\xef\xbf\xbd" not in raw and warn and not warned:
                warn("input holds bytes that are not UTF-8; they were replaced with U+FFFD")
                warned = True
        yield line.rstrip("\r\n")


# ---------------------------------------------------------------- a closed stdout
# Policy for every command when the reader of stdout leaves (`dlkit ... | head -3`, EPIPE):
#
# * training commands (run through dlkit.core.training.run_training) stop at the next step as on Ctrl-C:
#   the resumable state is saved, one line on stderr says so and where, and the exit code is 141;
# * inference commands stop printing results but finish their work (every file named by -o/--out is
#   written), then exit 141 without a message, as `cat` does in the same place.
#
# Never exit 0: a closed stdout must not look like success to `set -o pipefail` or to a driver script.
# Results go through ResultStream (or Reporter.event), which turns the first EPIPE into ``closed``.


def _silence_stdout(stream) -> None:
    """Point fd 1 at /dev/null so later writes and the interpreter's final flush cannot raise again."""
    try:
        if stream is sys.stdout or stream is sys.__stdout__ or stream.fileno() == 1:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


class ResultStream:
    """stdout for results under the closed-stdout policy: ``write``/``line`` return False once the reader
    has gone; ``finish()`` raises :class:`StdoutClosed` (exit 141, no message) if that happened."""

    def __init__(self, stream=None):
        self._stream = stream
        self.closed = False

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stdout

    def write(self, text: str) -> bool:
        if self.closed:
            return False
        try:
            self.stream.write(text)
            self.stream.flush()
            return True
        except BrokenPipeError:
            self.closed = True
            _silence_stdout(self.stream)
            return False

    def line(self, text: str) -> bool:
        return self.write(text + "\n")

    def finish(self, message: str = "") -> None:
        """Call at the end of an inference command: exit 141 if results could not all be delivered."""
        if self.closed:
            from dlkit.core.errors import StdoutClosed

            raise StdoutClosed(message)


results = ResultStream()  # the process's stdout; the CLI resets it per command and checks it at the end


def result_stream(stream=None) -> ResultStream:
    """The shared :data:`results` for stdout (so the CLI sees a closed pipe), a private one for other streams."""
    return results if stream is None or stream is sys.stdout else ResultStream(stream)


def write_line(text: str, stream=None) -> bool:
    """Write one result line and flush; False when stdout is closed (see the policy above)."""
    return result_stream(stream).line(text)


def ensure_can_write(out: str | os.PathLike, inputs: list[Path] = (), overwrite: bool = False) -> Path:
    """Refuse to write over an input file unless ``overwrite``; create the parent folder."""
    out = Path(out)
    for src in inputs:
        if out.exists() and Path(src).exists() and out.resolve() == Path(src).resolve() and not overwrite:
            raise OutputError(f"output '{out}' is the input file; pass --overwrite to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create folder '{out.parent}': {e.strerror}") from None
    return out
