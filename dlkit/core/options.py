"""Shared CLI options: the same name, type, default and help on every command. Imports no torch.

One way to declare an option, :func:`opt` (a ``typer.Option`` with its help panel given as ``panel``):

* a fixed set of values is ``choices=(...)``: the command still receives a plain ``str`` (configs and saved
  states stay plain values), anything else is a one-line usage error (exit 2) at parse time, and the values
  are the option's metavar, so ``--help`` and the man pages show them;
* a number that must be above zero is ``above=0`` (Typer's ``min=`` includes its bound).

The aliases below are the options that mean the same on every command; a task declares its own with ``opt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional, Sequence

import typer


def opt(*names: str, help: str, panel: str | None = None, choices: Sequence[str] | None = None,
        renamed: dict[str, str] | None = None, above: float | None = None, **kw):
    """A ``typer.Option``. ``choices``: the accepted str values (``renamed`` maps earlier names onto them);
    ``above``: an exclusive lower bound for a number."""
    if panel is not None:
        kw["rich_help_panel"] = panel
    if choices is not None:
        kw.setdefault("metavar", "|".join(choices))
        kw["callback"] = _one_of(tuple(choices), renamed or {})
    elif above is not None:
        kw["callback"] = _above(above)
    return typer.Option(*names, help=help, **kw)


def _one_of(values: tuple[str, ...], renamed: dict[str, str]):
    def check(value):
        if value is None:
            return None
        value = renamed.get(value, value)
        if value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}")
        return value

    return check


def _above(bound: float):
    def check(value):
        if value is not None and not value > bound:
            raise typer.BadParameter(f"{value} is not above {bound:g}")
        return value

    return check


Device = Annotated[str, opt("--device", help="auto | cpu | cuda | cuda:N | mps", panel="Runtime")]
Precision = Annotated[str, opt("--precision", choices=("auto", "fp32", "bf16", "fp16"), panel="Runtime",
                               help="auto: bf16 on GPUs; on CPUs fp32, or bf16 where measured faster (native bf16 only)")]
Threads = Annotated[Optional[int], opt("--threads", min=1, help="CPU threads for torch (default: measured).",
                                       panel="Runtime")]
MemoryFormat = Annotated[str, opt("--memory-format", choices=("auto", "contiguous", "channels-last"), panel="Runtime",
                                  help="Convolution layout for training. auto: channels-last on a CPU where it "
                                       "was measured faster (benchmarks/RESULTS.md, CPU speed)")]
Seed = Annotated[int, opt("--seed", help="Random seed (same seed, same result on CPU).", panel="Runtime")]

Json = Annotated[bool, opt("--json", help="Machine-readable JSON Lines on stdout.", panel="Output")]
Quiet = Annotated[bool, opt("--quiet", "-q", help="No progress or messages on stderr.", panel="Output")]
Out = Annotated[Path, opt("--out", "-o", help="Output folder for the trained model and its state.", panel="Output")]
Overwrite = Annotated[bool, opt("--overwrite", help="Replace what is already in the output folder/file.",
                                panel="Output")]
SaveDtype = Annotated[str, opt("--save-dtype", choices=("fp32", "fp16", "int8"),
                               help="Weights' type in the model file (int8: weight matrices per-row int8, the rest fp16).",
                               panel="Output")]

Model = Annotated[str, opt("--model", "-m", help="Bundled model NAME or path to a .safetensors file.")]
Models = Annotated[Optional[list[str]], opt("--model", "-m", help="Bundled model NAME or path to a .safetensors file; "
                                                             "repeat the option to compare several.")]
Data = Annotated[Optional[Path], opt("--data", help="Dataset file or folder (read in place, never copied).")]
Download = Annotated[bool, opt("--download", help="Fetch MNIST or CIFAR-10 into $DLKIT_HOME/data, SHA-256 checked "
                                                  "(needs internet; never implicit).")]

Resume = Annotated[bool, opt("--resume", help="Continue from the training state saved in --out.", panel="Training")]
# The command receives --max-time in seconds (None: no limit), as every TrainConfig holds it.
MaxTime = Annotated[Optional[float], opt("--max-time", min=0.0, panel="Training",
                                         callback=lambda minutes: minutes * 60 if minutes else None,
                                         help="Stop this run after this many minutes of training (the state is saved; "
                                              "with --resume only the new run's time counts).")]
Lr = Annotated[Optional[float], opt("--lr", above=0.0, help="Peak learning rate.", panel="Training")]
Steps = Annotated[Optional[int], opt("--steps", min=1, help="Optimizer steps to train for.", panel="Training")]
Epochs = Annotated[Optional[int], opt("--epochs", min=1, help="Epochs to train for.", panel="Training")]
BatchSize = Annotated[Optional[int], opt("--batch-size", min=1, help="Examples per batch and process.",
                                         panel="Training")]

