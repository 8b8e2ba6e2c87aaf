"""Shared CLI options: the same name, type, default and help on every command. Imports no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps", rich_help_panel="Runtime")]

Seed = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same result on CPU).", rich_help_panel="Runtime")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON Lines on stdout.", rich_help_panel="Output")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or messages on stderr.", rich_help_panel="Output")]
Debug = Annotated[bool, typer.Option("--debug", help="Show a traceback on errors.", rich_help_panel="Output")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder for the trained model and its state.", rich_help_panel="Output")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the training state saved in --out.", rich_help_panel="Training")]
Model = Annotated[str, typer.Option("--model", "-m", help="Bundled model NAME or path to a .safetensors file.")]
OptModel = Annotated[Optional[str], typer.Option("--model", "-m", help="Bundled model NAME or path to a .safetensors file.")]
MaxTime = Annotated[
    Optional[float], typer.Option("--max-time", min=0.0, help="Stop this run after this many minutes of training (the state is saved; "
                 "with --resume only the new run's time counts).", rich_help_panel="Training")
]


def opt(*names: str, help: str, panel: str | None = None, **kw):
    """A ``typer.Option`` with its help panel given as ``panel`` (the task CLIs' one spelling of an option)."""
    if panel is not None:
        kw["rich_help_panel"] = panel
    return typer.Option(*names, help=help, **kw)


def choice(*values: str):
    """A Typer callback that accepts only ``values`` for a str option: a usage error (exit 2, one line) otherwise.

    Like an Enum, but the command keeps receiving a plain str (configs and saved states stay plain values)."""

    def check(value):
        if value is not None and value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}")
        return value

    return check


Precision = Annotated[
    str, typer.Option("--precision", callback=choice("auto", "fp32", "bf16", "fp16"), metavar="auto|fp32|bf16|fp16",
                      help="auto | fp32 | bf16 | fp16 (auto: bf16 on GPUs, fp32 on CPU)", rich_help_panel="Runtime")
]
SaveDtype = Annotated[
    str, typer.Option("--save-dtype", callback=choice("fp32", "fp16"), metavar="fp32|fp16", help="fp32 or fp16 weights in the model file.",
                      rich_help_panel="Output")
]
Threads = Annotated[
    Optional[int],
    typer.Option("--threads", min=1, help="CPU threads for torch (default: measured, see README).", rich_help_panel="Runtime"),
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace what is already in the output folder/file.", rich_help_panel="Output")
]
Lr = Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Peak learning rate.", rich_help_panel="Training")]
Steps = Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimizer steps to train for.", rich_help_panel="Training")]
Epochs = Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs to train for.", rich_help_panel="Training")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Examples per batch and process.", rich_help_panel="Training")]
Data = Annotated[Optional[Path], typer.Option("--data", help="Dataset file or folder (read in place, never copied).")]
Download = Annotated[
    bool, typer.Option("--download", help="Allow torchvision to download the dataset (needs internet; never implicit).")
]
