"""`dlkit superres` and `dlkit superres-train`: thin commands over dlkit.tasks.superres (no torch at import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.errors import UsageError
from dlkit.core.options import (BatchSize, Device, Json, Lr, MaxTime, Out, Overwrite, Precision, Quiet, Resume,
                                SaveDtype, Seed, Steps, Threads)
from dlkit.tasks.superres import DEFAULT_MAX_PIXELS

app = typer.Typer()


@app.command("superres-train")
def superres_train(
    data: Annotated[Path, typer.Option("--data", help="HR training images: a folder (recursive) or a .tar.")],
    out: Out = Path("runs/superres"),
    arch: Annotated[str, typer.Option("--arch", help="srresnet (pixel loss) or srgan (content + adversarial).")] = "srresnet",
    preset: Annotated[str, typer.Option("--preset", help="Generator size: srresnet | edsr-baseline | small | tiny.")] = "srresnet",
    scale: Annotated[int, typer.Option("--scale", min=2, max=4, help="Upscaling factor: 2, 3 or 4.")] = 4,
    n_blocks: Annotated[Optional[int], typer.Option("--blocks", min=1, help="Residual blocks (default: the preset's).")] = None,
    channels: Annotated[Optional[int], typer.Option("--channels", min=1, help="Feature channels (default: the preset's).")] = None,
    bn: Annotated[Optional[bool], typer.Option("--bn/--no-bn", help="BatchNorm in the blocks (SRResNet) or not (EDSR).")] = None,
    patch: Annotated[int, typer.Option("--patch", min=4, help="LR patch side; the HR patch is patch x scale.")] = 24,
    batch_size: BatchSize = 16,
    steps: Steps = 2000,
    lr: Lr = 2e-4,
    min_lr: Annotated[float, typer.Option("--min-lr", min=0.0, help="Learning rate at the end of the cosine.")] = 1e-6,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Linear warmup steps.")] = 50,
    loss: Annotated[str, typer.Option("--loss", help="Pixel loss for srresnet: l1 or mse.")] = "l1",
    val: Annotated[Optional[Path], typer.Option("--val", help="Held-out HR images (folder or .tar) for validation PSNR.")] = None,
    val_split: Annotated[int, typer.Option("--val-split", min=0, help="Or hold out the last N images of --data.")] = 0,
    eval_every: Annotated[int, typer.Option("--eval-every", min=1, help="Validate (and keep the best model) every N steps.")] = 250,
    log_every: Annotated[int, typer.Option("--log-every", min=1, help="Report losses (and check them for NaN) every N steps.")] = 10,
    init: Annotated[Optional[str], typer.Option("--init", help="Start the generator from this model (srgan: an srresnet).")] = None,
    content: Annotated[str, typer.Option("--content", help="srgan content loss: auto (VGG if local, else L1) | vgg | l1 | mse.")] = "auto",
    vgg_weights: Annotated[Optional[Path], typer.Option("--vgg-weights", help="Local VGG19 ImageNet weights (.pth/.safetensors).")] = None,
    adv_weight: Annotated[float, typer.Option("--adv-weight", min=0.0, help="Weight of the adversarial loss (paper: 1e-3).")] = 1e-3,
    max_pixels: Annotated[int, typer.Option("--max-pixels", min=1, help="Skip training images larger than this (checked before decoding).")] = 64_000_000,
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
    """Train a super-resolution model (SRResNet or SRGAN) on HR images.

    LR inputs are made with MATLAB-compatible bicubic downsampling; patches are flipped and rotated.
    Unreadable, too large or too small images are skipped with a warning naming each.
    The best model by validation PSNR (for srgan: the latest) goes to OUT/model.safetensors; OUT/model.state.pt lets --resume
    continue exactly. A non-empty OUT needs --resume or --overwrite. Ctrl-C saves the state and exits with code 130.

    Examples:

      dlkit superres-train --data train.tar --val-split 10 --scale 4 --steps 20000 --out runs/srresnet

      dlkit superres-train --data photos/ --arch srgan --init srresnet-x4 --steps 2000 --out runs/srgan

      torchrun --nproc_per_node=4 -m dlkit superres-train --data train.tar --val Set5/ --out runs/ddp
    """
    if save_dtype not in ("fp32", "fp16"):
        raise UsageError(f"--save-dtype must be fp32 or fp16 (got {save_dtype})")
    if not lr or lr <= 0:
        raise UsageError(f"--lr must be positive (got {lr})")
    if not data.exists():
        raise UsageError(f"--data '{data}' does not exist")

    from dlkit.core.training import run_training
    from dlkit.tasks.superres.train import TrainConfig, train

    cfg = TrainConfig(
        data=str(data), out=str(out), arch=arch, preset=preset, scale=scale, n_blocks=n_blocks, channels=channels,
        bn=bn, patch=patch, batch_size=batch_size, steps=steps, lr=lr, min_lr=min_lr, warmup=warmup, loss=loss,
        val=str(val) if val else None, val_split=val_split, eval_every=eval_every, log_every=log_every, init=init,
        content=content, vgg_weights=str(vgg_weights) if vgg_weights else None, adv_weight=adv_weight,
        max_time=max_time * 60 if max_time else None, seed=seed, save_dtype=save_dtype, resume=resume,
        max_pixels=max_pixels,
    )

    def render(result, report) -> None:
        report.event("result", model=result.model_path, steps=result.steps, best_val_psnr=result.best_val_psnr,
                     seconds=result.seconds)
        best = f"best val PSNR {result.best_val_psnr:.2f} dB; " if result.best_val_psnr is not None else ""
        report.info(f"{best}{result.steps} steps in {result.seconds:.0f} s; model: {result.model_path}")
        if not json_out:
            report.result(result.model_path)

    run_training(train, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision,
                 seed=seed, threads=threads, json_out=json_out, quiet=quiet, render=render)


DEFAULT_MODEL = "srresnet-x4"


@app.command("superres")
def superres(
    inputs: Annotated[Optional[list[Path]], typer.Argument(help="LR images or folders to upscale.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file (one input) or folder (several inputs or a folder).")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Model NAME or .safetensors path, or 'bicubic'; repeat with --eval or --compare to compare several.")] = None,
    scale: Annotated[Optional[int], typer.Option("--scale", min=2, max=4, help="Upscaling factor (must be the model's: 2, 3 or 4).")] = None,
    tile: Annotated[Optional[int], typer.Option("--tile", min=0, help="LR tile side in px (default: chosen from the image size and free memory; 0: whole image at once).", show_default=False)] = None,
    overlap: Annotated[Optional[int], typer.Option("--overlap", min=0, help="LR pixels of context around each tile (default: the model's receptive field, so tiles give exactly the untiled output).", show_default=False)] = None,
    max_pixels: Annotated[int, typer.Option("--max-pixels", min=1, help="Refuse inputs with more pixels than this, before decoding them.")] = DEFAULT_MAX_PIXELS,
    eval_dir: Annotated[Optional[Path], typer.Option("--eval", help="Benchmark on a folder of HR images (Set5, Set14...).")] = None,
    compare: Annotated[Optional[Path], typer.Option("--compare", help="Write the panel bicubic | model(s) | original (with a zoomed crop row) here.")] = None,
    hr: Annotated[Optional[Path], typer.Option("--hr", help="The original HR image for --compare (alone: LR made from it).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Allow writing over an input file.")] = False,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Upscale images with a super-resolution model, benchmark it, or draw the comparison panel.

    Large images are processed in tiles chosen from the free memory; the output is the same as untiled.
    In folder mode a bad file is a warning naming it (a JSON record with --json), the others are written,
    and the exit code is 1 at the end. Benchmarks follow the literature: HR cropped to a multiple of the scale,
    LR by MATLAB-compatible bicubic, PSNR/SSIM on the Y channel (BT.601) with `scale` pixels shaved; bicubic is
    always shown.

    Examples:

      dlkit superres photo.png -o photo_x4.png --scale 4

      dlkit superres photos/ -o big/

      dlkit superres --eval Set5/ --scale 4 --model srresnet-x4 --model srgan-x4

      dlkit superres --hr butterfly.png --compare panel.png --model srresnet-x4 --model srgan-x4
    """
    if tile and tile < 8:
        raise UsageError(f"--tile {tile} is too small; use 0 (no tiling) or at least 8")
    inputs = inputs or []
    if eval_dir is None and compare is None and not inputs:
        raise UsageError("give images to upscale, --eval DIR or --compare PANEL (see --help)")
    if eval_dir is not None and (inputs or compare is not None):
        raise UsageError("--eval benchmarks a folder; it cannot be combined with input images or --compare")
    if hr is not None and compare is None:
        raise UsageError("--hr is used with --compare")
    if compare is not None and len(inputs) > 1:
        raise UsageError("--compare draws one image; give one input (or only --hr)")
    if compare is None and eval_dir is None:
        from dlkit.tasks.superres.paths import check_out

        check_out(inputs, out)  # `superres a.png b.png -o two.png`: refused before torch and the model load
    if len(inputs) == 1 and inputs[0].is_file():  # a bomb or a broken file: the same
        from dlkit.vision.image import check_image

        check_image(inputs[0], max_pixels)

    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.superres import infer

    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, precision, 0, distributed=False, threads=threads)
    names = model or ([DEFAULT_MODEL] if eval_dir is None or _have(DEFAULT_MODEL) else ["bicubic"])
    if eval_dir is None and compare is None and len(names) > 1:
        raise UsageError("give one --model to upscale with (several are for --eval and --compare)")
    nets, scale = infer.load_models(names, scale, rt.device)
    opts = dict(rt=rt, tile=tile, overlap=overlap)
    if eval_dir is not None:
        _evaluate(eval_dir, nets, scale, opts, max_pixels, report, json_out)
    elif compare is not None:
        result = infer.compare(nets, scale, compare, inputs[0] if inputs else None, hr, warn=report.warn,
                               max_pixels=max_pixels, **opts)
        for k, v in result["metrics"].items():
            report.info(f"{k}: {v['psnr']:.2f} dB / {v['ssim']:.4f} (Y, x{scale})")
        report.result(json.dumps(result) if json_out else result["panel"])
    else:
        _upscale(inputs, out, nets, scale, opts, max_pixels, overwrite, report, json_out)


def _evaluate(eval_dir: Path, nets: dict, scale: int, opts: dict, max_pixels: int, report, json_out: bool) -> None:
    from dlkit.core.batch import BatchOutcome
    from dlkit.core.errors import DataError
    from dlkit.tasks.superres import infer

    images, read = infer.benchmark_images(eval_dir, report, max_pixels)
    with report.progress(len(images), "superres --eval") as update:
        res, measured = infer.evaluate(images, scale, nets, progress=update, report=report, **opts)
    if not res.images:
        raise DataError(f"no image in '{eval_dir}' could be measured (see the warnings above)")
    if json_out:
        report.result(json.dumps({"dataset": eval_dir.name, "scale": scale, "images": res.images,
                                  "protocol": "Y BT.601, shave=scale, MATLAB bicubic, uint8", "results": res.rows,
                                  "per_image": res.per_image}))
    else:
        report.result(_table(eval_dir.name, res))
    BatchOutcome(total=read.total, failed=read.failed + measured.failed, what="images").raise_if_failed()


def _upscale(inputs, out, nets: dict, scale: int, opts: dict, max_pixels: int, overwrite: bool, report,
             json_out: bool) -> None:
    from dlkit.tasks.superres import infer

    name, net = next(iter(nets.items()), ("bicubic", None))

    def show(r) -> None:
        if json_out:
            report.result(json.dumps({"input": r.input, "output": r.output, "width": r.size[0], "height": r.size[1],
                                      "seconds": round(r.seconds, 3)}))
        else:
            report.result(r.output)

    tiles = {None: "tiles chosen from the free memory", 0: "whole images"}.get(opts["tile"], f"tiles of {opts['tile']} px")
    report.info(f"superres: x{scale} with {name}, {tiles}")
    outcome = infer.upscale_files(inputs, out, net, scale, overwrite=overwrite, report=report, on_result=show,
                                  max_pixels=max_pixels, progress=report.progress, **opts)
    outcome.raise_if_failed()



def _have(name: str) -> bool:
    from dlkit.core.zoo import ZOO_DIR, home_dir

    return (ZOO_DIR / f"{name}.safetensors").exists() or (home_dir() / "models" / f"{name}.safetensors").exists()


def _table(dataset: str, res) -> str:
    lines = [f"{dataset} x{res.scale} ({res.images} images; PSNR/SSIM on Y, {res.scale} px shaved)",
             f"{'method':<24} {'PSNR (dB)':>10} {'SSIM':>8}"]
    for name, m in res.rows.items():
        lines.append(f"{name:<24} {m['psnr']:>10.2f} {m['ssim']:>8.4f}")
    return "\n".join(lines)
