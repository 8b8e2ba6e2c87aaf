"""Errors with a one-line message and an exit code; the CLI prints them without a traceback."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `cat big | head -1`


class DlkitError(Exception):
    """An expected failure: its message is shown to the user as one line.

    ``exit_code`` comes from the class; ``DataError(msg, exit_code=EXIT_USAGE)`` overrides it for one error.
    The rule for every command: a path named on the command line that does not exist, is a folder where a
    file is meant or is a FIFO where a regular file is meant exits 2 (a usage error, as Click's own path
    checks do), whatever the error's class; a file that exists but cannot be used exits 1."""

    exit_code = EXIT_FAILURE

    def __init__(self, *args, exit_code: int | None = None):
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(DlkitError):
    """Bad option values or combinations (exit 2)."""

    exit_code = EXIT_USAGE


class DataError(DlkitError):
    """Input data that cannot be used: missing, empty, binary, too short..."""


class ModelFileError(DlkitError):
    """A model file that is missing, truncated, foreign or of another task."""


class OutputError(DlkitError):
    """Cannot write a result (permissions, disk full, refusing to overwrite)."""


class Interrupted(DlkitError):
    """Training stopped by Ctrl-C or SIGTERM after saving a resumable checkpoint."""

    exit_code = EXIT_INTERRUPTED


class TrainingDiverged(DlkitError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class StdoutClosed(DlkitError):
    """The reader of stdout left (``dlkit ... | head``). See :mod:`dlkit.core.io` for the policy.

    Exit code 141 (128 + SIGPIPE, what the shell reports for ``cat`` in the same place), so a pipeline with
    ``set -o pipefail`` sees that not everything was delivered. An empty message prints nothing."""

    exit_code = EXIT_BROKEN_PIPE
