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

The tail every task's loop shares is three functions (no Trainer class; each loop stays its own):

* :func:`resume_state` reads the state ``--resume`` continues: the task, the keys and the settings that
  decide tensor shapes are checked, and a folder without a state is one usage error (exit 2);
* :func:`stop_reason`, called once per step on every rank, says why to stop (``"interrupted"``,
  ``"max-time"``, ``"steps"``) with the same answer on every rank under DDP;
* :func:`save_and_interrupt` saves the state (rank 0), waits for every rank and raises
  :class:`Interrupted` (exit 130).

What the loop still does itself: call :func:`dlkit.core.optim.check_finite` at the logging interval;
take ``t0 = time.monotonic()`` when it starts, so ``--max-time`` counts *this* run, not a resumed total.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, NoReturn, TypeVar

from dlkit.core.errors import DlkitError, Interrupted, StdoutClosed, UsageError
from dlkit.core.interrupt import StopSignal, catch_signals
from dlkit.core.report import Reporter
from dlkit.core.rundir import open_run_dir, run_files
from dlkit.core.state import check_resume, load_state

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
    family: str | None = None,
    memory_format: str | None = None,
) -> R:
    """Run ``train(cfg, rt, report, stop)`` under the policies above and return its result (``family``: the
    model family that ``--precision auto`` looks up on a CPU, see core.runtime.resolve_precision)."""
    from dlkit.core.runtime import make_runtime, shutdown

    # Every rank checks --out before the process group forms in make_runtime; rank 0 can only write run
    # files after that rendezvous, so no rank sees rank 0's fresh files as "a run already there".
    is_main = int(os.environ.get("RANK", "0") or 0) == 0
    with open_run_dir(Path(out), resume=resume, overwrite=overwrite, is_main=is_main):
        report = Reporter(quiet=quiet, json_mode=json_out)
        stop = StopSignal()
        report.on_stdout_closed = lambda: stop.request(None)
        rt = make_runtime(device, precision, seed, distributed=distributed, threads=threads, family=family,
                          memory_format=memory_format)
        try:
            with catch_signals(stop):
                result = train(cfg, rt, report, stop)
            # rank 0 may still be finishing (an average, a last save) when the others return: tear the process
            # group down together, not while a peer still works (gloo aborted a rank that left early)
            rt.barrier()
        except Interrupted as e:
            if report.stdout_closed:
                raise StdoutClosed(f"stdout was closed by its reader, so training stopped: {e}") from None
            raise
        except RuntimeError as e:
            if rt.distributed and any(m in str(e) for m in _PEER_LOST):
                raise DlkitError("another process of this torchrun run ended first (its message says why); "
                                 "this one stops too") from None
            raise
        finally:
            shutdown(rt)
        if render is not None and rt.is_main:
            render(result, report)
        if report.stdout_closed:
            raise StdoutClosed(f"stdout was closed by its reader before the results were printed; "
                               f"the run finished and its files are in '{out}'")
        return result


# How gloo and NCCL report a rank that has gone (killed, crashed, or stopped at once by a Ctrl-C that came
# before its loop could agree with the others on stopping)
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


# Why a loop stops, by priority: when ranks disagree the largest code wins (an interrupt beats a clock).
STOP_REASONS = (None, "steps", "max-time", "interrupted")


def stop_reason(stop: StopSignal, rt: Any, *, t0: float, max_time_s: float | None = None, step: int | None = None,
                max_steps: int | None = None) -> str | None:
    """Why the loop should stop after this step, the same answer on every rank; None to go on.

    ``"interrupted"``: SIGINT/SIGTERM or a closed stdout (``stop.poll(step)``): save the state and raise
    (:func:`save_and_interrupt`). ``"max-time"``: ``max_time_s`` seconds have passed since ``t0`` (this
    run's start). ``"steps"``: ``step >= max_steps``. Under DDP the ranks' answers are all-reduced (the
    largest of :data:`STOP_REASONS` wins), because a rank that left alone would leave the others waiting
    in their next all-reduce forever: a signal sent to one rank, or a clock that runs out on one rank a
    step earlier, stops all of them after the same step. So call it at the same steps on every rank (it
    costs one tiny all-reduce); on one process it is a plain check with no collective.
    """
    code = 0
    if stop.poll(step if step is not None else 0) or stop.requested:
        code = 3
    elif max_time_s and time.monotonic() - t0 > max_time_s:
        code = 2
    elif max_steps is not None and step is not None and step >= max_steps:
        code = 1
    if getattr(rt, "distributed", False):
        code = rt.all_reduce_max(code)
    return STOP_REASONS[code]


def save_and_interrupt(rt: Any, save: Callable[[], Any], where: str, state_file: str | os.PathLike) -> NoReturn:
    """The end of an interrupted loop: ``save()`` (it writes on rank 0 only), wait until every rank is here,
    so that none leaves (and makes torchrun stop the others) while rank 0 is still writing; raise
    :class:`Interrupted` (exit 130) saying ``where`` it stopped and how to continue."""
    save()
    if getattr(rt, "distributed", False):
        rt.barrier()
    raise Interrupted(f"interrupted {where}; state saved to '{state_file}', continue with --resume")


def resume_state(state_file: str | os.PathLike, task: str, *, required: tuple[str, ...] = (),
                 config: dict | None = None, shape_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The training state ``--resume`` continues, checked; call it only with ``--resume``.

    * no state file: :class:`UsageError` (exit 2), "there is no saved training state in OUT to resume"
      (every ``*-train`` command: a resume that silently started a new run would hide a typo in ``--out``);
    * a state of another task, a newer dlkit, a pickle or missing ``required`` keys:
      :class:`~dlkit.core.errors.ModelFileError` naming the file (:func:`dlkit.core.state.load_state`);
    * ``config`` (the new run's settings, as plain values) is compared with the saved config on
      ``shape_keys``: other shape settings are a :class:`UsageError` (:func:`dlkit.core.state.check_resume`).
    """
    path = Path(state_file)
    if not path.exists():
        raise UsageError(f"--resume: there is no saved training state in '{path.parent}' to resume "
                         f"(no {path.name}); start a new run without --resume"
                         + (" (add --overwrite to replace what the folder holds)" if run_files(path.parent) else ""))
    state = load_state(path, task, required=required)
    if config is not None:
        saved = state.get("config")
        check_resume(saved if isinstance(saved, dict) else {}, config, shape_keys, path.parent)
    return state
