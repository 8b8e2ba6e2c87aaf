"""Guarded input and streamed output: text files, stdin lines, output paths. Imports no torch.

The shared input/output policies (docs/policies.md):

* ``regular_file(path, what="file", error=DataError) -> Path``: an existing regular file, or one line
  saying it is missing, a folder, or a FIFO/device (which would hang or never end where a file is meant).
* ``read_bytes(path, what="file", *, limit=TEXT_LIMIT) -> bytes``: a plain or gzipped file, or a stream,
  read with a cap on the (decompressed) bytes, checked while reading: a decompression bomb stops at the cap.
* ``read_text(path, what="file", errors="strict", *, limit=TEXT_LIMIT) -> str``: the same, decoded as UTF-8.
* ``guard_output(path, *, inputs=(), overwrite=False) -> Path``: the output policy of inference commands:
  never write over an input (same inode or resolved path), refuse an existing file unless ``overwrite``.
* ``quote(text, limit=QUOTE_LIMIT) -> str``: user input cut for a message, so one huge line cannot flood
  stderr; ``one_line(msg)``: a whole message folded and cut (the CLI and the reporter's warnings use it).
* ``.npz`` members with a cap: :mod:`dlkit.core.npz`.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from dlkit.core.errors import EXIT_USAGE, DataError, OutputError

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
        raise DataError(f"data file '{quote(p)}' does not exist", exit_code=EXIT_USAGE)
    if p.is_dir():
        raise DataError(f"'{quote(p)}' is a folder; expected a text file", exit_code=EXIT_USAGE)
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


TEXT_LIMIT = 256_000_000  # bytes of (decompressed) text one file may hold (2M caption sentences: ~120 MB)
QUOTE_LIMIT = 80  # characters of user input quoted in a message


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{int(n)} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def quote(text: object, limit: int = QUOTE_LIMIT) -> str:
    """``text`` for a message: one line, at most ``limit`` characters (then "... (N characters)")."""
    s = str(text)
    flat = s if len(s) <= limit and "\n" not in s else s[: limit + 1].replace("\r", " ").replace("\n", " ")
    if len(s) <= limit:
        return flat
    return f"{flat[:limit]}... ({len(s):,} characters)"


MESSAGE_LIMIT = 1000  # characters of one message line on stderr


def one_line(msg: object, limit: int = MESSAGE_LIMIT) -> str:
    """A message as printed: whitespace runs folded to one space, at most ``limit`` characters. The last
    guard against stderr floods (the CLI's error line and the reporter's warnings pass through it)."""
    s = str(msg)
    if len(s) > 4 * limit:
        s = s[: 4 * limit]  # fold only what can be shown
    s = " ".join(s.split())
    return s if len(s) <= limit else s[:limit] + f"... (cut at {limit} characters)"


def regular_file(path: str | os.PathLike, what: str = "file", error: type = DataError) -> Path:
    """``path`` if it is an existing regular file (symlinks followed); else one ``error`` line.

    A FIFO, ``<(...)``, a device or a socket is refused here: where a file is meant (a model, an .npz, a
    weights file) it would hang with no writer, or never end. Readers of streams use :func:`read_bytes`."""
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise error(f"{what} '{quote(p)}' does not exist", exit_code=EXIT_USAGE) from None
    except OSError as e:
        raise error(f"{what} '{quote(p)}' cannot be read: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{what} '{quote(p)}' is a folder, not a file", exit_code=EXIT_USAGE)
    if not stat.S_ISREG(mode):
        kind = "a FIFO or pipe" if stat.S_ISFIFO(mode) else "a device or socket"
        raise error(f"{what} '{quote(p)}' is {kind}, not a regular file; save it to a file first",
                    exit_code=EXIT_USAGE)
    return p


def read_bytes(path: str | os.PathLike, what: str = "file", *, limit: int = TEXT_LIMIT) -> bytes:
    """The bytes of a plain or gzipped file, a FIFO or ``<(...)``: at most ``limit`` after decompression.

    The cap is checked while reading (1 MiB at a time), so a small .gz that inflates to gigabytes stops at
    ``limit`` with one :class:`DataError` line; it never relies on sizes the file claims."""
    import gzip
    import zlib

    p = Path(path)
    try:
        f = open(p, "rb")
    except FileNotFoundError:
        raise DataError(f"{what} '{quote(p)}' does not exist", exit_code=EXIT_USAGE) from None
    except IsADirectoryError:
        raise DataError(f"{what} '{quote(p)}' is a folder, not a file", exit_code=EXIT_USAGE) from None
    except OSError as e:
        raise DataError(f"cannot read {what} '{quote(p)}': {e.strerror}") from None
    chunks, total = [], 0
    with f:
        zipped = f.peek(2)[:2] == b"\x1f\x8b"
        src = gzip.GzipFile(fileobj=f, mode="rb") if zipped else f
        try:
            while chunk := src.read(1 << 20):
                total += len(chunk)
                if total > limit:
                    how = " once decompressed" if zipped else ""
                    raise DataError(f"{what} '{quote(p)}' holds more than {human_bytes(limit)}{how}; "
                                    f"dlkit reads at most {human_bytes(limit)} from one file (split it)")
                chunks.append(chunk)
        except (OSError, EOFError, zlib.error) as e:
            if not zipped:
                raise DataError(f"cannot read {what} '{quote(p)}': {getattr(e, 'strerror', None) or e}") from None
            raise DataError(f"{what} '{quote(p)}' is a damaged gzip file: {quote(e)}") from None
    return b"".join(chunks)


def read_text(path: str | os.PathLike, what: str = "file", errors: str = "strict", *,
              limit: int = TEXT_LIMIT) -> str:
    """The whole text of a plain or gzipped UTF-8 file (or FIFO), capped by :func:`read_bytes`."""
    p = Path(path)
    raw = read_bytes(p, what, limit=limit)
    if b"\x00" in raw[:65536]:
        raise DataError(f"{what} '{quote(p)}' looks binary (it holds NUL bytes); expected UTF-8 text")
    try:
        return raw.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as e:
        raise DataError(f"{what} '{quote(p)}' is not UTF-8 text (bad byte at offset {e.start})") from None


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


def guard_output(path: str | os.PathLike, *, inputs=(), overwrite: bool = False) -> Path:
    """The output policy of inference commands; returns ``path`` with its parent folder created.

    Never writes over one of ``inputs`` (same inode or same resolved path), even with ``overwrite``;
    refuses an existing file unless ``overwrite``; refuses a folder. A FIFO or device (``/dev/stdout``,
    ``/dev/null``) is a stream, not a file to lose, and is allowed."""
    out = Path(path)
    try:
        st = os.stat(out)
    except OSError:
        st = None
    for src in inputs:
        try:
            same = os.path.samefile(out, src) if st is not None else False
        except OSError:
            same = False
        if same or out.resolve() == Path(src).resolve():
            raise OutputError(f"output '{quote(out)}' is an input file ('{quote(src)}'); "
                              "write the result elsewhere (dlkit never replaces an input)")
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"output '{quote(out)}' is a folder; give a file name")
    if st is not None and stat.S_ISREG(st.st_mode) and not overwrite:
        raise OutputError(f"output '{quote(out)}' already exists; pass --overwrite to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create folder '{quote(out.parent)}': {e.strerror}") from None
    return out
