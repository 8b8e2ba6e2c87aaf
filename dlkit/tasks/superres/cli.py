"""`dlkit superres` and `dlkit superres-train`: thin commands over dlkit.tasks.superres (no torch at import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.errors import UsageError
from dlkit.core.options import (BatchSize, Device, Json, Lr, MaxTime, MemoryFormat, Models, Out, Overwrite, Precision,
                                Quiet, Resume, SaveDtype, Seed, Steps, Threads, opt)
from dlkit.tasks.superres import DEFAULT_MAX_PIXELS

app = typer.Typer()


@app.command("superres-train")
def superres_train(
    data: Annotated[Path, opt("--data", help="HR training images: a folder (recursive) or a .tar.")],
    out: Out = Path("runs/superres"),
    arch: Annotated[str, opt("--arch", choices=("srresnet", "srgan"), help="srresnet (pixel loss) or srgan (content "
                                                                              "+ adversarial).")] = "srresnet",
    preset: Annotated[str, opt("--preset", choices=("srresnet", "edsr-baseline", "small", "tiny"), help="Generator size.")] = "srresnet",
    scale: Annotated[int, opt("--scale", min=2, max=4, help="Upscaling factor: 2, 3 or 4.")] = 4,
    n_blocks: Annotated[Optional[int], opt("--blocks", min=1, help="Residual blocks (default: the preset's).")] = None,
    channels: Annotated[Optional[int], opt("--channels", min=1, help="Feature channels (default: the preset's).")] = None,
    bn: Annotated[Optional[bool], opt("--bn/--no-bn", help="BatchNorm in the blocks (SRResNet) or not (EDSR).")] = None,
    patch: Annotated[int, opt("--patch", min=4, help="LR patch side; the HR patch is patch x scale.")] = 24,
    batch_size: BatchSize = 16,
    steps: Steps = 2000,
    lr: Lr = 2e-4,
    min_lr: Annotated[float, opt("--min-lr", min=0.0, help="Learning rate at the end of the cosine.")] = 1e-6,
    warmup: Annotated[int, opt("--warmup", min=0, help="Linear warmup steps.")] = 50,
    loss: Annotated[str, opt("--loss", choices=("l1", "mse"), help="Pixel loss for srresnet.")] = "l1",
    val: Annotated[Optional[Path], opt("--val", help="Held-out HR images (folder or .tar) for validation PSNR.")] = None,
    val_split: Annotated[int, opt("--val-split", min=0, help="Or hold out the last N images of --data.")] = 0,
    eval_every: Annotated[int, opt("--eval-every", min=1, help="Validate (and keep the best model) every N steps.")] = 250,
    log_every: Annotated[int, opt("--log-every", min=1, help="Report losses (and check them for NaN) every N steps.")] = 10,
    init: Annotated[Optional[str], opt("--init", help="Start the generator from this model (srgan: an srresnet).")] = None,
    content: Annotated[str, opt("--content", choices=("auto", "vgg", "l1", "mse"), help="srgan content loss (auto: VGG "
                                                                                          "if local, else L1).")] = "auto",
    vgg_weights: Annotated[Optional[Path], opt("--vgg-weights", help="Local VGG19 ImageNet weights (.pth/.safetensors).")] = None,
    adv_weight: Annotated[float, opt("--adv-weight", min=0.0, help="Weight of the adversarial loss (paper: 1e-3).")] = 1e-3,
    max_pixels: Annotated[int, opt("--max-pixels", min=1, help="Skip training images larger than this (checked before decoding).")] = 64_000_000,
    max_time: MaxTime = None,
    save_dtype: SaveDtype = "fp32",
    resume: Resume = False,
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "auto",
    memory_format: MemoryFormat = "auto",
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
    if not data.exists():
        raise UsageError(f"--data '{data}' does not exist")

    from dlkit.core.training import run_training
    from dlkit.tasks.superres.train import TrainConfig, train

    cfg = TrainConfig(
        data=str(data), out=str(out), arch=arch, preset=preset, scale=scale, n_blocks=n_blocks, channels=channels,
        bn=bn, patch=patch, batch_size=batch_size, steps=steps, lr=lr, min_lr=min_lr, warmup=warmup, loss=loss,
        val=str(val) if val else None, val_split=val_split, eval_every=eval_every, log_every=log_every, init=init,
        content=content, vgg_weights=str(vgg_weights) if vgg_weights else None, adv_weight=adv_weight,
        max_time=max_time, seed=seed, save_dtype=save_dtype, resume=resume,
        max_pixels=max_pixels,
    )

    run_training(train, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision,
                 seed=seed, threads=threads, json_out=json_out, quiet=quiet, render=_trained, family="superres",
                 memory_format=memory_format)


def _trained(result, report) -> None:
    best = f"best val PSNR {result.best_val_psnr:.2f} dB; " if result.best_val_psnr is not None else ""
    report.trained(result.model_path, f"{best}{result.steps} steps in {result.seconds:.0f} s", steps=result.steps,
                   best_val_psnr=result.best_val_psnr, seconds=result.seconds)


@app.command("superres")
def superres(
    inputs: Annotated[Optional[list[Path]], typer.Argument(help="LR images or folders to upscale.", show_default=False)] = None,
    out: Annotated[Optional[Path], opt("--out", "-o", help="Output file (one input) or folder (several inputs or a folder).")] = None,
    model: Models = None,
    scale: Annotated[Optional[int], opt("--scale", min=2, max=4, help="Upscaling factor (must be the model's: 2, 3 or 4).")] = None,
    tile: Annotated[Optional[int], opt("--tile", min=0, help="LR tile side in px (default: chosen from the image size and free memory; 0: whole image at once).", show_default=False)] = None,
    overlap: Annotated[Optional[int], opt("--overlap", min=0, help="LR pixels of context around each tile (default: the model's receptive field, so tiles give exactly the untiled output).", show_default=False)] = None,
    max_pixels: Annotated[int, opt("--max-pixels", min=1, help="Refuse inputs with more pixels than this, before decoding them.")] = DEFAULT_MAX_PIXELS,
    eval_dir: Annotated[Optional[Path], opt("--eval", help="Benchmark on a folder of HR images (Set5, Set14...).")] = None,
    compare: Annotated[Optional[Path], opt("--compare", help="Write the panel bicubic | model(s) | original (with a zoomed crop row) here.")] = None,
    hr: Annotated[Optional[Path], opt("--hr", help="The original HR image for --compare (alone: LR made from it).")] = None,
    overwrite: Annotated[bool, opt("--overwrite", help="Allow writing over an input file.")] = False,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Upscale images with a super-resolution model, benchmark it, or draw the comparison panel.

    --model is srresnet-x4 by default, or 'bicubic' (the baseline); --eval and --compare take several.

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
    from dlkit.tasks.superres.jobs import Tiling, make_job

    job = make_job([str(p) for p in inputs or []], _s(out), model, _s(eval_dir), _s(compare), _s(hr), scale,
                   Tiling(tile, overlap), max_pixels, overwrite)  # a bad combination fails before torch loads

    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.superres.jobs import CompareJob, EvalJob, run_job

    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, precision, 0, distributed=False, threads=threads)
    result = run_job(job, rt, report, on_file=lambda r: report.result(_file_line(r, json_out)))
    if isinstance(job, EvalJob):
        r = result.result
        report.result(json.dumps({"dataset": result.dataset, "scale": r.scale, "images": r.images,
                                  "protocol": "Y BT.601, shave=scale, MATLAB bicubic, uint8", "results": r.rows,
                                  "per_image": r.per_image}) if json_out else _table(result.dataset, r))
        result.outcome.raise_if_failed()
    elif isinstance(job, CompareJob):
        for k, v in result["metrics"].items():
            report.info(f"{k}: {v['psnr']:.2f} dB / {v['ssim']:.4f} (Y, x{result['scale']})")
        report.result(json.dumps(result) if json_out else result["panel"])
    else:
        result.raise_if_failed()


def _s(p: Optional[Path]) -> Optional[str]:
    return str(p) if p is not None else None


def _file_line(r, json_out: bool) -> str:
    if not json_out:
        return r.output
    return json.dumps({"input": r.input, "output": r.output, "width": r.size[0], "height": r.size[1],
                       "seconds": round(r.seconds, 3)})


def _table(dataset: str, res) -> str:
    lines = [f"{dataset} x{res.scale} ({res.images} images; PSNR/SSIM on Y, {res.scale} px shaved)",
             f"{'method':<24} {'PSNR (dB)':>10} {'SSIM':>8}"]
    for name, m in res.rows.items():
        lines.append(f"{name:<24} {m['psnr']:>10.2f} {m['ssim']:>8.4f}")
    return "\n".join(lines)
