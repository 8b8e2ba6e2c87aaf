"""The root ``dlkit`` command. Each task's Typer app is mounted from the explicit list below.

Nothing here imports torch: ``dlkit --help`` and ``dlkit <command> --help`` stay fast.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Annotated, Optional

# OpenMP threads that spin briefly, then sleep (why and how long: dlkit.core.threads). Must be set before
# torch (libgomp) loads, which no import above or below does. The user's own OMP_WAIT_POLICY/GOMP_SPINCOUNT win.
from dlkit.core.threads import openmp_wait_env  # noqa: E402

os.environ.update(openmp_wait_env(os.environ))

import typer  # noqa: E402
from typer.core import TyperGroup

from dlkit import __version__
from dlkit.core.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, DlkitError
from dlkit.core.io import results

# Each entry is a module with a Typer ``app``; its commands appear at the top level.
from dlkit import info
from dlkit import download_cli
from dlkit.tasks.lm import cli as lm_cli
from dlkit.tasks.translate import cli as translate_cli
from dlkit.tasks.superres import cli as superres_cli
from dlkit.tasks.caption import cli as caption_cli
from dlkit.tasks.adversarial import cli as adversarial_cli
from dlkit.tasks.gan import cli as gan_cli
from dlkit.tasks.random_labels import cli as random_labels_cli
from dlkit.tasks.frames import cli as frames_cli
from dlkit.tasks.classifier import cli as classifier_cli
from dlkit.tasks.explain import cli as explain_cli

TASK_APPS = [
    lm_cli.app,
    translate_cli.app,
    superres_cli.app,
    caption_cli.app,
    adversarial_cli.app,
    gan_cli.app,
    random_labels_cli.app,
    frames_cli.app,
    classifier_cli.app,
    explain_cli.app,
    download_cli.app,
    info.app,
]


def _debug() -> bool:
    return os.environ.get("DLKIT_DEBUG", "") not in ("", "0")


def help_blocks(text: str):
    """A help text's paragraphs as ``(is_example, lines)``: an example block has every line indented (or starts
    with click's ``\\b``). --help (:func:`reflow`) and the man pages read paragraphs through this one rule."""
    for para in re.split(r"\n\s*\n", text.strip("\n")):
        if para.strip():
            lines = para.strip("\n").splitlines()
            yield all(line.startswith("  ") for line in lines if line.strip()) or para.startswith("\b"), lines


def reflow(text: str | None) -> str | None:
    """A docstring's paragraphs as --help shows them: the source's line breaks inside a paragraph joined (Typer
    keeps them, and a terminal then wraps the long lines again: ragged text); example blocks and list items
    (``- ``) keep their lines."""
    if not text:
        return text
    out = []
    for example, lines in help_blocks(text):
        joined: list[str] = []
        for line in lines:
            if not example and joined and not line.startswith("  ") and not line.lstrip().startswith("- "):
                joined[-1] += " " + line.strip()
            else:
                joined.append(line.rstrip())
        out.append("\n".join(joined))
    return "\n\n".join(out)


def _reflow_all(cmd) -> None:
    """Reflow the help of ``cmd`` and, for a group, of its commands (once per process)."""
    if getattr(cmd, "_dlkit_reflowed", False):
        return
    cmd.help = reflow(cmd.help)
    cmd._dlkit_reflowed = True
    for sub in getattr(cmd, "commands", {}).values():
        _reflow_all(sub)


class DlkitGroup(TyperGroup):
    """Turns DlkitError into one red line and an exit code; Ctrl-C into exit 130 (tracebacks with --debug)."""

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)  # keep the order of the list above, not alphabetical

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            _reflow_all(cmd)
        return cmd

    def format_help(self, ctx, formatter):
        _reflow_all(self)
        return super().format_help(ctx, formatter)

    def invoke(self, ctx):
        results.closed = False
        try:
            value = super().invoke(ctx)
        except DlkitError as e:
            if _debug():
                raise
            if str(e):
                _error_line(str(e))
            ctx.exit(e.exit_code)
        except BrokenPipeError:
            # `dlkit translate < big.txt | head -1` with a write that bypassed core.io.results: the reader
            # left; stop without a message, as `cat` does, but never with exit 0 (policy in core.io).
            _silence_stdout()
            ctx.exit(EXIT_BROKEN_PIPE)
        except KeyboardInterrupt:
            if _debug():
                raise
            _error_line("interrupted")
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as e:  # a bug, not bad input: still one line, the traceback behind --debug
            if _is_click_usage_error(e) and not _debug():
                # Typer's range checks (min=/max=/enums) and missing options: one line, like every error
                name = ctx.invoked_subcommand or ""
                _error_line(f"{e.format_message()} (see 'dlkit {name} --help')".replace("dlkit  --", "dlkit --"))
                ctx.exit(e.exit_code)
            if _debug() or _is_click_control(e):
                raise
            if type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, any training command
                _error_line("out of GPU memory; try a smaller --batch-size (with --grad-accum to keep the effective "
                            "batch where the command has it) or a smaller model preset")
                ctx.exit(1)
            _error_line(f"unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)")
            ctx.exit(1)
        if results.closed:  # an inference command finished its work but could not print all results
            ctx.exit(EXIT_BROKEN_PIPE)
        return value


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _is_click_usage_error(e: Exception) -> bool:
    """click.UsageError/BadParameter (matched by shape: Typer may vendor click)."""
    return hasattr(e, "format_message") and hasattr(e, "show") and getattr(e, "exit_code", None) == 2


def _is_click_control(e: Exception) -> bool:
    """Click's own exits and usage errors (Typer may vendor click, so match by shape, not by class)."""
    return isinstance(e, (typer.Exit, typer.Abort)) or (hasattr(e, "exit_code") and hasattr(e, "show")) \
        or type(e).__name__ in ("Exit", "Abort")


def _error_line(msg: str) -> None:
    from dlkit.core.io import one_line

    msg = one_line(msg) or "failed"
    if sys.stderr.isatty():
        sys.stderr.write(f"\x1b[31merror:\x1b[0m {msg}\n")
    else:
        sys.stderr.write(f"error: {msg}\n")
    sys.stderr.flush()


app = typer.Typer(
    cls=DlkitGroup,
    name="dlkit",
    help="Landmark deep-learning systems, runnable from a shell.\n\n"
    "Every command has its own --help with examples; `dlkit models` lists the bundled models, the man "
    "pages (man ./man/dlkit.1 in a checkout) describe them all.\n\n"
    "Examples:\n\n"
    "  dlkit lm-sample --model shakespeare-char --prompt 'ROMEO:'\n\n"
    "  dlkit lm-train --data input.txt --preset small --out runs/lm\n\n"
    "  dlkit models\n\n"
    "  dlkit doctor",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
for sub in TASK_APPS:
    app.add_typer(sub)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dlkit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors (also DLKIT_DEBUG=1).")] = False,
) -> None:
    """dlkit: landmark deep-learning systems, runnable from a shell."""
    if debug:
        os.environ["DLKIT_DEBUG"] = "1"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``--debug`` may stand anywhere; a closed pipe ends quietly."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args.remove("--debug")
        os.environ["DLKIT_DEBUG"] = "1"
    try:
        app(args=args, prog_name="dlkit")
    except BrokenPipeError:
        # `dlkit translate < big.txt | head -1`: stop quietly, as `cat` does, with cat's exit status.
        _silence_stdout()
        sys.exit(EXIT_BROKEN_PIPE)
    except SystemExit as e:
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            _leave_worker(e.code)
        raise


def _leave_worker(code: object) -> None:
    """A torchrun worker's end: its files are closed and its process group is gone, so leave at once.
    Tearing down the interpreter and torch's C++ statics after gloo could abort the process (SIGABRT,
    "terminate called without an active exception", seen once in CI) and turn a finished run into a
    failed one."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        _silence_stdout()
    try:
        sys.stderr.flush()
    except (ValueError, OSError):
        pass
    os._exit(status)
