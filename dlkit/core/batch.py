"""The batch-mode policy of every command: one bad item never costs the others. Imports no torch.

``run_each`` calls ``process(item)`` for each item. An expected failure of one item (a :class:`DlkitError`,
``OSError`` or ``ValueError``: a damaged file, an image too large, a file that cannot be written) becomes a
warning ``"<name>: <message>"`` on stderr and, with ``--json``, a record
``{"event": "error", "path": <name>, "error": <message>}`` on stdout; the other items go on. After all of
them, ``outcome.raise_if_failed()`` raises :class:`BatchFailed` (exit 1) when any failed::

    outcome = run_each(files, upscale_one, report, name=str)
    outcome.raise_if_failed()

Bugs (any other exception), Ctrl-C and a closed stdout (``BrokenPipeError``) are not per-item failures:
they propagate at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

from dlkit.core.errors import DlkitError, Interrupted
from dlkit.core.io import quote

T = TypeVar("T")


class BatchFailed(DlkitError):
    """Some items of a batch failed (each was reported as it happened); the others were processed."""


@dataclass
class BatchOutcome:
    total: int = 0
    results: list[Any] = field(default_factory=list)  # process(item) of each item that succeeded, in order
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, message)
    what: str = "items"

    @property
    def ok(self) -> int:
        return self.total - len(self.failed)

    def raise_if_failed(self) -> None:
        if self.failed:
            names = ", ".join(quote(n) for n, _ in self.failed[:3]) + (" ..." if len(self.failed) > 3 else "")
            raise BatchFailed(f"{len(self.failed)} of {self.total} {self.what} failed ({names}); "
                              "the others were processed (see the warnings above)")


def failure_message(e: BaseException) -> str:
    """One line for a per-item failure (OSError without its errno noise, long messages cut)."""
    if isinstance(e, OSError) and not isinstance(e, DlkitError) and e.strerror:
        text = e.strerror + (f": '{e.filename}'" if e.filename else "")
    else:
        text = str(e)
    text = " ".join(text.split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def run_each(items: Iterable[T], process: Callable[[T], Any], report, name: Callable[[T], str] = str,
             what: str = "items", progress: Callable[..., None] | None = None) -> BatchOutcome:
    """Process every item; failures are reported one by one and collected in the returned outcome.

    ``report`` is a :class:`dlkit.core.report.Reporter` (``warn`` and ``event`` are used); ``progress``
    (e.g. the ``update`` of ``report.progress``) is called once per item, failed or not."""
    outcome = BatchOutcome(what=what)
    for item in items:
        outcome.total += 1
        try:
            outcome.results.append(process(item))
        except (BrokenPipeError, Interrupted):
            raise
        except (DlkitError, OSError, ValueError, MemoryError) as e:
            label, msg = name(item), failure_message(e)
            outcome.failed.append((label, msg))
            report.warn(f"{quote(label)}: {msg}")  # the --json record keeps the whole name
            report.event("error", path=label, error=msg)
        if progress is not None:
            progress(1)
    return outcome
