"""Ctrl-C / SIGTERM during training: finish the current step, save a resumable state, exit 130."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager


class StopSignal:
    """Set by SIGINT/SIGTERM; training loops poll ``requested`` between steps."""

    def __init__(self) -> None:
        self._requested = False
        self.signum: int | None = None
        # Until the loop first polls (so there is a state worth saving), a signal interrupts at once:
        # Ctrl-C during data preparation must not wait for the first step.
        self.armed = False

    @property
    def requested(self) -> bool:
        return self._requested

    def request(self, signum: int | None = None) -> None:
        self._requested = True
        self.signum = signum

    def poll(self, step: int) -> bool:
        """Called once per optimizer step; tests override it to stop at a chosen step."""
        self.armed = True
        return self.requested


@contextmanager
def catch_signals(stop: StopSignal):
    """Route SIGINT and SIGTERM to ``stop`` (a second Ctrl-C aborts at once).

    Under torchrun a Ctrl-C reaches each worker twice: from the terminal, and forwarded by torchrun,
    which then kills workers that have not finished within its own timeout. There a repeated signal is
    not an abort, or the forwarded copy would cut the state save short."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    old = {}
    abort_on_repeat = "TORCHELASTIC_RUN_ID" not in os.environ

    def handler(signum, frame):
        if not stop.armed or (stop.requested and signum == signal.SIGINT and abort_on_repeat):
            raise KeyboardInterrupt
        stop.request(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
