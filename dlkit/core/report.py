"""Progress, metrics and messages for people (stderr) and machines (--json on stdout).

Modes: ``rich`` (stderr is a terminal: live bar, metrics printed above it), ``plain`` (not a terminal:
one line per event), ``quiet`` (nothing on stderr). ``--json`` adds one JSON object per line on stdout
for training events. Under torchrun only rank 0 reports. Imports no torch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, TextIO


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


class Reporter:
    def __init__(
        self,
        quiet: bool = False,
        json_mode: bool = False,
        stderr: TextIO | None = None,
        stdout: TextIO | None = None,
        rich: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        plain_interval: float = 30.0,
    ):
        from dlkit.core.io import result_stream

        self.stderr = stderr if stderr is not None else sys.stderr
        self.stdout = stdout if stdout is not None else sys.stdout
        self._results = result_stream(stdout)
        self.on_stdout_closed: Callable[[], None] | None = None  # training: stop and save (core.training)
        rank = int(os.environ.get("RANK", "0") or 0)
        self.silent = rank != 0  # under torchrun only rank 0 talks
        self.quiet = quiet or self.silent
        self.json_mode = json_mode and not self.silent
        if rich is None:
            rich = hasattr(self.stderr, "isatty") and self.stderr.isatty()
        self.rich = rich and not self.quiet
        self.clock = clock
        self.plain_interval = plain_interval
        self._console = None
        self._progress = None

    # -------------------------------------------------------------- messages (stderr)
    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stderr, stderr=True, highlight=False)
        return self._console

    def info(self, msg: str) -> None:
        if self.quiet:
            return
        if self.rich:
            self.console.print(msg, markup=False)
        else:
            print(msg, file=self.stderr, flush=True)

    def warn(self, msg: str) -> None:
        if self.silent:
            return
        from dlkit.core.io import one_line

        msg = one_line(msg)
        if self.rich:
            self.console.print(f"[yellow]warning:[/] {msg}", highlight=False)
        else:
            print(f"warning: {msg}", file=self.stderr, flush=True)

    # -------------------------------------------------------------- events (stdout, --json)
    @property
    def stdout_closed(self) -> bool:
        return self._results.closed

    def result(self, text: str) -> bool:
        """A result line on stdout (closed-stdout policy of :mod:`dlkit.core.io`); False once closed."""
        ok = self._results.line(text)
        if not ok and self.on_stdout_closed is not None:
            self.on_stdout_closed()
        return ok

    def event(self, kind: str, **fields: Any) -> None:
        if self.json_mode:
            self.result(json.dumps({"event": kind, **fields}, default=_fmt_json))

    def start(self, title: str, what: str, rt, step: int = 0, unit: str = "step", **fields: Any) -> None:
        """The banner of a training run: ``title: what; device, precision[, channels-last][, N processes]
        [, resuming at <unit> S]`` on stderr, and a ``start`` event with ``fields``, the step and the runtime
        (``rt``: a core.runtime.Runtime; ``memory_format`` only for commands that choose it through the runtime)."""
        fmt = {} if rt.channels_last is None else {
            "memory_format": "channels-last" if rt.channels_last else "contiguous"}
        self.info(f"{title}: {what}; {rt.device}, {rt.precision}" + (", channels-last" if rt.channels_last else "")
                  + (f", {rt.world_size} processes" if rt.distributed else "")
                  + (f", resuming at {unit} {step}" if step else ""))
        self.event("start", **fields, step=step, world_size=rt.world_size, device=str(rt.device),
                   precision=rt.precision, **fmt)

    def trained(self, model_path: str, summary: str, **fields: Any) -> None:
        """The end of a ``*-train`` command: a ``result`` event with ``fields`` (--json), ``summary`` on stderr
        and, without --json, the model's path on stdout (the command's one result)."""
        self.event("result", model=model_path, **fields)
        self.info(f"{summary}; model: {model_path}")
        if not self.json_mode:
            self.result(model_path)

    def metrics(self, kind: str = "metrics", **m: Any) -> None:
        """A line of metrics for people and an event for machines."""
        self.event(kind, **m)
        self.info(f"{kind}: " + " | ".join(f"{k} {_fmt(v)}" for k, v in m.items()))

    # -------------------------------------------------------------- progress
    @contextmanager
    def progress(self, total: int | None, description: str = "", start: int = 0):
        """Yield ``update(advance=1, **fields)``: a Rich bar on a terminal, periodic lines otherwise."""
        if self.quiet:
            yield lambda advance=1, **f: None
            return
        if self.rich:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
            with Progress(*cols, console=self.console, transient=False, redirect_stdout=False, redirect_stderr=False) as p:
                task = p.add_task(description, total=total, completed=start, status="")

                def update(advance: int = 1, **fields: Any) -> None:
                    status = " ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
                    p.update(task, advance=advance, **({"status": status} if fields else {}))

                yield update
            return
        state = {"n": start, "last": self.clock()}

        def update(advance: int = 1, **fields: Any) -> None:
            state["n"] += advance
            now = self.clock()
            if now - state["last"] >= self.plain_interval or (total is not None and state["n"] >= total):
                state["last"] = now
                of = f"/{total}" if total else ""
                extra = "".join(f" | {k} {_fmt(v)}" for k, v in fields.items())
                print(f"{description} {state['n']}{of}{extra}", file=self.stderr, flush=True)

        yield update


def _fmt_json(v: Any):
    if hasattr(v, "item"):
        return v.item()
    return str(v)
