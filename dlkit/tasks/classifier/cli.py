"""`dlkit classifier-train`: a thin command over dlkit.tasks.classifier.train (no torch at import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.options import (BatchSize, Data, Device, Download, Json, MaxTime, Out, Overwrite, Precision, Quiet,
                                Resume, SaveDtype, Seed, Threads, opt)

app = typer.Typer()

_T = "Training"
PARTS = ("whiten-init, whiten-freeze, dirac, bn-weight-freeze, bias-scaler, label-smoothing, flip, translate, "
         "lookahead, tta, channels-last")


@app.command("classifier-train")
def classifier_train(
    dataset: Annotated[str, opt("--dataset", choices=("cifar10", "mnist"), help="Dataset read from --data "
                                "(or --download); ignored when --data is an image folder.")] = "cifar10",
    data: Data = None,
    download: Download = False,
    out: Out = Path("runs/classifier"),
    preset: Annotated[str, opt("--preset", choices=("airbench",), help="Training recipe (Jordan 2024's "
                               "airbench94: whitening conv, 64/256/256 conv groups, lookahead, TTA).", panel=_T)] = "airbench",
    disable: Annotated[Optional[str], opt("--disable", help=f"Recipe parts to switch off, comma-separated: {PARTS}.",
                                          panel=_T)] = None,
    widths: Annotated[Optional[str], opt("--widths", help="Channels of the three conv groups, comma-separated "
                                         "(default: airbench94's 64,256,256; airbench96 uses 128,384,384).",
                                         panel=_T)] = None,
    epochs: Annotated[Optional[float], opt("--epochs", min=0.01, help="Epochs to train for (default: the "
                                           "preset's, 9.9).", panel=_T)] = None,
    batch_size: BatchSize = None,
    lr: Annotated[Optional[float], opt("--lr", min=0.0, help="Learning rate per 1,024 examples, decoupled from "
                                       "momentum (default: the preset's, 11.5).", panel=_T)] = None,
    subset: Annotated[Optional[int], opt("--subset", min=1, help="Train on N random training images.")] = None,
    test_subset: Annotated[Optional[int], opt("--test-subset", min=1, help="Test on N random test images.")] = None,
    max_time: MaxTime = None,
    resume: Resume = False,
    save_dtype: SaveDtype = "fp16",
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "auto",
    seed: Seed = 0,
    threads: Threads = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train an image classifier with the airbench recipe; writes OUT/model.safetensors.

    The schedule follows steps or, with --max-time, wall time, whichever is further along, so a run on a
    busy machine still ends annealed. The test accuracy (with and without test-time augmentation) goes into
    the model file; `dlkit adv-attack --model OUT/model.safetensors` reads it. Ctrl-C saves the state
    (the epoch restarts); --resume continues the schedule where it stopped. Under torchrun each process
    trains on its share of the data, --batch-size images a step.

    Examples:

      dlkit classifier-train --data cifar10_jpeg.npz --out runs/cifar --max-time 70

      dlkit classifier-train --data cifar10_jpeg.npz --out runs/no-lookahead --epochs 4 --disable lookahead

      dlkit classifier-train --data photos/ --out runs/photos --batch-size 100

      dlkit classifier-train --data cifar10_jpeg.npz --out runs/wide --widths 128,384,384 --epochs 30

      dlkit classifier-train --data cifar10_jpeg.npz --out runs/cifar --resume --max-time 30
    """
    from dlkit.core.errors import UsageError

    if data is not None and not data.exists():
        raise UsageError(f"--data '{data}' does not exist")
    if data is None and not download:
        raise UsageError("give --data PATH (a .npz or an image folder) or --download to fetch the dataset with torchvision")
    from dlkit.core.training import run_training
    from dlkit.tasks.classifier.train import TrainConfig, train
    from dlkit.vision.airbench import recipe_config

    recipe_config("airbench", disable)  # a bad --disable fails before any data is read
    cfg = TrainConfig(dataset=dataset, data=str(data) if data else None, download=download, out=str(out),
                      preset=preset, disable=disable, widths=parse_widths(widths), epochs=epochs,
                      batch_size=batch_size, lr=lr, subset=subset, test_subset=test_subset, max_time=max_time,
                      save_dtype=save_dtype, seed=seed, resume=resume)

    def render(result, report) -> None:
        summary = (f"test accuracy {100 * result.test_accuracy:.2f}% (TTA level {result.tta}; "
                   f"{100 * result.test_accuracy_no_tta:.2f}% without) on {result.test_images:,} images; "
                   f"{result.epochs} epochs in {result.seconds / 60:.1f} min, {result.images_per_s:.0f} img/s")
        report.trained(result.model, summary, **{k: v for k, v in vars(result).items() if k != "model"})

    run_training(train, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision,
                 seed=seed, threads=threads, json_out=json_out, quiet=quiet, render=render, family="classifier")


MAX_WIDTH = 2048  # channels per conv group: weights grow with its square (2048: about 38M in one 3x3 conv)


def parse_widths(text: str | None) -> list[int] | None:
    """``--widths 96,384,384`` -> [96, 384, 384]; one line naming the problem otherwise."""
    from dlkit.core.errors import UsageError

    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--widths '{text}': expected three whole numbers of channels, e.g. 64,256,256")
    widths = [int(p) for p in parts]
    if not all(1 <= w <= MAX_WIDTH for w in widths):
        raise UsageError(f"--widths '{text}': each must be between 1 and {MAX_WIDTH:,}")
    return widths
