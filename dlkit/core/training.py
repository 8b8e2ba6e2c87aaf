"""Running a ``*-train`` command: the part every training command shares, so each CLI stays a few lines.

:func:`run_training` does, in this order:

1. opens ``--out`` with :func:`dlkit.core.rundir.open_run_dir` (refuses a folder holding a run without
   ``--resume``/``--overwrite``, locks it against a second concurrent run, removes stale temp files);
2. builds the :class:`~dlkit.core.report.Reporter` and the :class:`~dlkit.core.runtime.Runtime`
   (device, precision, seed, ``--threads``, DDP under torchrun);
3. routes SIGINT/SIGTERM and a closed stdout to one :class:`~dlkit.core.interrupt.StopSignal`: the
   task's loop polls it, saves its resumable state and raises :class:`Interrupted` (exit 130); when the
   cause was a closed stdout (``dlkit x-train --json | head -3``) that becomes :class:`StdoutClosed`
   (exit 141, one line on stderr): a closed stdout never looks like success;
4. calls ``train(cfg, rt, report, stop)`` and then ``render(result, report)``, and shuts DDP down.

What the task's loop must do itself (a few lines each): poll ``stop`` once per step; call
:func:`dlkit.core.optim.check_finite` at the logging interval; count ``--max-time`` from the start of
*this* run (``time.monotonic()`` at the loop's start, not the resumed run's total); check a resumed state
with :func:`dlkit.core.checkpoint.check_resume`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, TypeVar

from dlkit.core.errors import Interrupted, StdoutClosed
from dlkit.core.interrupt import StopSignal, catch_signals
from dlkit.core.report import Reporter
from dlkit.core.rundir import open_run_dir

R = TypeVar("R")


def run_training(
    train: Callable[[Any, Any, Reporter, StopSignal], R],
    cfg: Any,
    *,
    out: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    precision: str = "auto",
    seed: int = 0,
    threads: int | None = None,
    json_out: bool = False,
    quiet: bool = False,
    distributed: bool = True,
    render: Callable[[R, Reporter], None] | None = None,
) -> R:
    """Run ``train(cfg, rt, report, stop)`` under the policies above and return its result."""
    from dlkit.core.runtime import make_runtime, shutdown

    # Every rank checks --out before the process group forms in make_runtime; rank 0 can only write run
    # files after that rendezvous, so no rank sees rank 0's fresh files as "a run already there".
    is_main = int(os.environ.get("RANK", "0") or 0) == 0
    with open_run_dir(Path(out), resume=resume, overwrite=overwrite, is_main=is_main):
        report = Reporter(quiet=quiet, json_mode=json_out)
        stop = StopSignal()
        report.on_stdout_closed = lambda: stop.request(None)
        rt = make_runtime(device, precision, seed, distributed=distributed, threads=threads)
        try:
            with catch_signals(stop):
                result = train(cfg, rt, report, stop)
        except Interrupted as e:
            if report.stdout_closed:
                raise StdoutClosed(f"stdout was closed by its reader, so training stopped: {e}") from None
            raise
        finally:
            shutdown(rt)
        if render is not None and rt.is_main:
            render(result, report)
        if report.stdout_closed:
            raise StdoutClosed(f"stdout was closed by its reader before the results were printed; "
                               f"the run finished and its files are in '{out}'")
        return result
