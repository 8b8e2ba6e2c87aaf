"""`dlkit fit-random-labels`: Zhang et al. 2017's randomization tests, one command (no torch at import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.options import (BatchSize, Data, Device, Download, Json, Lr, MaxTime, MemoryFormat, Out, Overwrite,
                                Precision, Quiet, Resume, SaveDtype, Seed, Threads, opt)

app = typer.Typer()

_T = "Training"
# the networks of dlkit.tasks.random_labels.model (a test checks they agree; this module must not import torch)
ARCHS = ("mlp-1x512", "mlp-3x512", "alexnet-small", "inception-small", "resnet", "mnist-cnn", "airbench")


@app.command("fit-random-labels")
def fit_random_labels(
    dataset: Annotated[str, opt("--dataset", choices=("cifar10", "mnist"), help="Read from --data, or --download; "
                                "ignored when --data is an image folder.")] = "cifar10",
    data: Data = None,
    download: Download = False,
    corruption: Annotated[str, opt("--corruption", "-c", help="Comma list of true | random | partial:P | "
                                            "shuffled-pixels | random-pixels | gaussian, or all.")] = "true,random",
    arch: Annotated[str, opt("--arch", choices=ARCHS, help="Zhang et al.'s MLPs, small AlexNet or Inception; a ResNet, the "
                             "MNIST CNN or airbench94's network.")] = "mlp-1x512",
    out: Out = Path("runs/random-labels"),
    subset: Annotated[Optional[int], opt("--subset", min=1, help="Train on N random training images.")] = None,
    test_subset: Annotated[Optional[int], opt("--test-subset", min=1, help="Test on N random test images.")] = None,
    until_fit: Annotated[bool, opt("--until-fit", help="Stop a run once training accuracy reaches "
                                            "--fit-threshold.", panel=_T)] = False,
    fit_threshold: Annotated[float, opt("--fit-threshold", above=0.0, max=1.0, help="Training accuracy "
                                                 "that counts as fitted.", panel=_T)] = 1.0,
    max_epochs: Annotated[int, opt("--max-epochs", min=1, help="Epochs per run at most.", panel=_T)] = 100,
    lr: Lr = None,
    lr_decay: Annotated[float, opt("--lr-decay", min=0.0, max=1.0, help="LR factor per epoch (paper: 0.95).",
                                            panel=_T)] = 0.95,
    batch_size: BatchSize = 128,
    weight_decay: Annotated[float, opt("--weight-decay", min=0.0, help="L2 regulariser (Table 1).",
                                                panel=_T)] = 0.0,
    dropout: Annotated[float, opt("--dropout", min=0.0, max=0.99, help="Dropout before the classifier "
                                           "layer(s).", panel=_T)] = 0.0,
    random_crop: Annotated[bool, opt("--random-crop", help="Augment with random crops (translations up to "
                                              "2 px).", panel=_T)] = False,
    crop: Annotated[Optional[int], opt("--crop", min=1, help="Centre crop (default: 28 for CIFAR-10, "
                                                "as in the paper; none otherwise).")] = None,
    image_size: Annotated[Optional[int], opt("--image-size", min=4, help="Resize image-folder images "
                                                      "to this square size.")] = None,
    whiten: Annotated[bool, opt("--whiten/--no-whiten", help="Per-image whitening (the paper) or the "
                                         "dataset's mean/std.")] = True,
    figures: Annotated[bool, opt("--figures/--no-figures", help="Write Fig. 1a-c as PNG into --out.")] = True,
    max_time: MaxTime = None,
    save_dtype: SaveDtype = "fp32",
    resume: Resume = False,
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "auto",
    memory_format: MemoryFormat = "auto",
    seed: Seed = 0,
    threads: Threads = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Fit a network to random labels and random pixels (Zhang et al. 2017) and compare with true labels.

    Each corruption is one run of the same network and hyperparameters (paper: SGD momentum 0.9, lr 0.1
    for Inception and 0.01 otherwise, x0.95 per epoch, batch 128; CIFAR-10 centre-cropped to 28x28 and
    whitened per image). Results: a table on stdout (--json: one object per run), Fig. 1a-c as PNG and a
    classifier file per run in --out.

    Examples:

      dlkit fit-random-labels --dataset mnist --data mnist.npz --corruption random --subset 1000 --until-fit

      dlkit fit-random-labels --data cifar10_jpeg.npz --arch inception-small -c true,random --until-fit

      dlkit fit-random-labels --data cifar10_jpeg.npz -c all --subset 5000 --until-fit --max-epochs 60

      dlkit fit-random-labels --data photos/ --image-size 32 -c true,random --until-fit
    """
    from dlkit.core.errors import UsageError

    if data is not None and not data.exists():
        raise UsageError(f"--data '{data}' does not exist")
    if data is None and not download:
        raise UsageError(f"give --data PATH ({dataset}{'.npz' if dataset == 'mnist' else '_jpeg.npz'} or an image "
                         "folder) or --download to fetch the dataset into $DLKIT_HOME/data")
    from dlkit.tasks.random_labels.data import parse_corruptions

    parse_corruptions(corruption)  # fail before any data is read
    from dlkit.core.training import run_training
    from dlkit.tasks.random_labels.report import render
    from dlkit.tasks.random_labels.train import FitConfig, fit

    cfg = FitConfig(
        dataset=dataset, data=str(data) if data else None, download=download, corruptions=corruption, arch=arch,
        out=str(out), subset=subset, test_subset=test_subset, crop=crop, image_size=image_size, whiten=whiten,
        lr=lr, lr_decay=lr_decay, batch_size=batch_size or 128, weight_decay=weight_decay, dropout=dropout,
        random_crop=random_crop, until_fit=until_fit, fit_threshold=fit_threshold, max_epochs=max_epochs,
        max_time=max_time, seed=seed, resume=resume, save_dtype=save_dtype, figures=figures,
    )
    run_training(fit, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision, seed=seed,
                 threads=threads, json_out=json_out, quiet=quiet,
                 render=render, family=f"random-labels:{arch}",
                 memory_format=memory_format)
