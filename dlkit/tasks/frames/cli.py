"""`dlkit frame-predict` and `dlkit frame-predict-train`: thin commands over dlkit.tasks.frames (no torch at import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.errors import UsageError
from dlkit.core.options import (BatchSize, Device, Json, Lr, MaxTime, MemoryFormat, Models, Out, Overwrite, Precision,
                                Quiet, Resume, SaveDtype, Seed, Steps, Threads, opt)

app = typer.Typer()
PRESETS = ("simvp-cpu", "convlstm-cpu", "simvp", "convlstm")  # dlkit.tasks.frames.model.PRESETS (a test keeps them equal)
METRIC_NAMES = {"mse": "MSE", "mae": "MAE", "ssim": "SSIM", "psnr": "PSNR", "sharp_diff": "sharp.diff", "grad": "sharpness"}


@app.command("frame-predict-train")
def frame_predict_train(
    data: Annotated[Path, opt("--data", help="mnist.npz: Moving MNIST sequences are made on the fly from its train digits.")],
    out: Out = Path("runs/frames"),
    preset: Annotated[str, opt("--preset", choices=PRESETS, help="Model and size (the -cpu ones fit a laptop).")] = "simvp-cpu",
    width: Annotated[Optional[int], opt("--width", min=1, help="Channels (default: the preset's).")] = None,
    depth: Annotated[Optional[int], opt("--depth", min=1, help="ConvLSTM cells per stack / SimVP translator blocks.")] = None,
    kernel: Annotated[Optional[int], opt("--kernel", min=1, help="ConvLSTM kernel / SimVP depthwise kernel (odd).")] = None,
    loss: Annotated[str, opt("--loss", choices=("mse", "l1", "adversarial"), help="Pixel loss, or adversarial (recon + "
                                                                                  "gradient difference + GAN).")] = "mse",
    recon: Annotated[str, opt("--recon", choices=("mse", "l1"), help="adversarial: its reconstruction term.")] = "mse",
    game: Annotated[str, opt("--game", choices=("non-saturating", "hinge"), help="adversarial: the GAN objective.")] = "non-saturating",
    gdl_weight: Annotated[float, opt("--gdl-weight", min=0.0, help="adversarial: gradient difference loss weight.")] = 1.0,
    adv_weight: Annotated[float, opt("--adv-weight", min=0.0, help="adversarial: GAN loss weight.")] = 0.01,
    d_steps: Annotated[int, opt("--d-steps", min=1, help="adversarial: discriminator updates per generator update (k).")] = 1,
    d_width: Annotated[int, opt("--d-width", min=1, help="adversarial: discriminator width.")] = 32,
    d_lr: Annotated[Optional[float], opt("--d-lr", above=0.0, help="adversarial: discriminator learning rate (default --lr).")] = None,
    batch_size: BatchSize = 16,
    steps: Steps = 2000,
    lr: Lr = 1e-3,
    min_lr: Annotated[float, opt("--min-lr", min=0.0, help="Learning rate at the end of the cosine.")] = 1e-5,
    warmup: Annotated[int, opt("--warmup", min=0, help="Linear warmup steps.")] = 100,
    clip: Annotated[float, opt("--clip", min=0.0, help="Gradient norm clip (0: off).")] = 1.0,
    val_size: Annotated[int, opt("--val-size", min=0, help="Validation sequences (train digits, another seed).")] = 200,
    eval_every: Annotated[int, opt("--eval-every", min=1, help="Validate and write the model every N steps.")] = 500,
    log_every: Annotated[int, opt("--log-every", min=1, help="Report losses (and check them for NaN) every N steps.")] = 20,
    snapshot_every: Annotated[Optional[int], opt("--snapshot-every", min=1, panel="Output",
                                                 help="Also keep the model every N steps in OUT/snapshots/ (to average the "
                                                      "late ones: dlkit models average).")] = None,
    init: Annotated[Optional[str], opt("--init", help="Start from this frames model (e.g. adversarial from an mse model).")] = None,
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
    """Train a next-frame predictor (10 frames in, 10 out) on Moving MNIST made on the fly.

    Writes OUT/model.safetensors (the latest model, with its validation metrics) and OUT/model.state.pt
    for --resume, which continues exactly (the sequences of each step depend only on --seed and the step);
    with --snapshot-every N also the model every N steps in OUT/snapshots/ (average the late ones with
    `dlkit models average`).
    A non-empty OUT needs --resume or --overwrite; Ctrl-C or --max-time saves the state; NaN stops the run.

    Examples:

      dlkit frame-predict-train --data mnist.npz --preset simvp-cpu --steps 4000 --out runs/mm-mse

      dlkit frame-predict-train --data mnist.npz --loss adversarial --init runs/mm-mse/model.safetensors --out runs/mm-adv

      torchrun --nproc_per_node=2 -m dlkit frame-predict-train --data mnist.npz --preset simvp --out runs/ddp
    """
    from dlkit.core.training import run_training
    from dlkit.tasks.frames.train import TrainConfig, train

    cfg = TrainConfig(
        data=str(data), out=str(out), preset=preset, width=width, depth=depth, kernel=kernel, loss=loss, recon=recon,
        game=game, gdl_weight=gdl_weight, adv_weight=adv_weight, d_steps=d_steps, d_width=d_width, d_lr=d_lr,
        batch_size=batch_size, steps=steps, lr=lr, min_lr=min_lr, warmup=warmup, clip=clip, val_size=val_size,
        eval_every=eval_every, log_every=log_every, snapshot_every=snapshot_every, max_time=max_time, init=init,
        seed=seed, save_dtype=save_dtype,
        resume=resume,
    )
    cfg.validate()

    def render(result, report) -> None:
        report.event("result", model=result.model_path, steps=result.steps, seconds=result.seconds,
                     metrics=result.metrics, copy_last=result.baseline)
        shown = f"; val MSE {result.metrics['val_mse']:.1f} (copy-last {result.baseline['val_mse']:.1f})" if result.metrics else ""
        report.info(f"frame-predict-train: {result.steps} steps in {result.seconds:.0f} s{shown}; model: {result.model_path}")
        if not json_out:
            report.result(result.model_path)

    run_training(train, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision, seed=seed,
                 threads=threads, json_out=json_out, quiet=quiet, render=render, family=_family(preset, init),
                 memory_format=memory_format)


def _family(preset: str, init) -> str:
    """"frames:ARCH" for --precision auto (core.runtime.CPU_AUTO_BF16): the --init model's or the preset's arch."""
    if init:
        from dlkit.core.loader import model_arch

        arch = model_arch(init, "frames")
        return f"frames:{arch}" if arch else "frames"
    from dlkit.tasks.frames.model import PRESETS

    return f"frames:{PRESETS[preset].arch}"


@app.command("frame-predict")
def frame_predict(
    clip: Annotated[Optional[Path], typer.Argument(help="Context frames: an animated .gif, a folder of frames or a .npy "
                                                        "(T, H, W[, C]).", show_default=False)] = None,
    out: Annotated[Optional[Path], opt("--out", "-o", help="Output: the predicted clip (.gif; a .png strip beside it), "
                                                           "or the --compare slide (.png).")] = None,
    model: Models = None,
    strip: Annotated[Optional[Path], opt("--strip", help="Where the PNG strip context | prediction | truth goes.")] = None,
    evaluate: Annotated[bool, opt("--eval", help="Score the model(s) and the baselines on Moving MNIST (--data).")] = False,
    compare: Annotated[Optional[tuple[str, str]], opt("--compare", metavar="MODEL_A MODEL_B",
                                                      help="Draw truth / A / B over the predicted frames (to --out).")] = None,
    data: Annotated[Optional[Path], opt("--data", help="mnist.npz (the generated test set) or mnist_test_seq.npy.")] = None,
    num: Annotated[int, opt("--num", "-n", min=1, help="--eval: the first N test sequences.")] = 10_000,
    index: Annotated[int, opt("--index", min=0, help="--compare: which test sequence.")] = 0,
    batch_size: Annotated[int, opt("--batch-size", min=1, help="--eval: sequences per batch.")] = 100,
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Predict the next frames of a clip, score models on Moving MNIST, or draw the MSE-vs-adversarial slide.

    A clip's first 10 frames are the context (resized and converted to the model's 64x64 grey); frames after them,
    when present, are the truth the strip and the metrics compare with. --eval prints per-frame-averaged MSE and
    MAE (summed over a frame, as OpenSTL reports them), SSIM, PSNR, the sharpness difference of Mathieu et al. and
    the mean gradient magnitude ("sharpness"), with the baselines copy-last-frame and mean-frame.

    Examples:

      dlkit frame-predict clip.gif -o next.gif

      dlkit frame-predict --eval --data mnist.npz --num 1000 -m moving-mnist-mse -m moving-mnist-adversarial

      dlkit frame-predict --compare moving-mnist-mse moving-mnist-adversarial --data mnist.npz --index 3 -o slide.png
    """
    from dlkit.tasks.frames.infer import DEFAULT_MODEL

    job = _job(clip, out, model or [], strip, evaluate, compare, data, num, index, batch_size, overwrite, DEFAULT_MODEL)
    job.check()  # before torch and the models load

    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.frames.infer import run

    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, precision, 0, distributed=False, threads=threads)
    result = run(job, rt, report)
    _render(result, report, json_out)


def _job(clip, out, models, strip, evaluate, compare, data, num, index, batch_size, overwrite, default):
    """The job the options describe; the combinations that make no sense are one usage line."""
    from dlkit.tasks.frames.infer import CompareJob, EvalJob, PredictJob

    if evaluate and compare:
        raise UsageError("give --eval or --compare, not both")
    if evaluate:
        if data is None or clip is not None:
            raise UsageError("--eval scores on Moving MNIST: give --data mnist.npz (or mnist_test_seq.npy) and no clip")
        return EvalJob(data, models or [default], num, batch_size)
    if compare:
        if models:
            raise UsageError("--compare takes its two models itself (--compare MODEL_A MODEL_B); drop --model")
        if out is None:
            raise UsageError("--compare draws a slide: add --out slide.png")
        return CompareJob(tuple(compare), out, data, index, clip, overwrite)
    if clip is None:
        raise UsageError("give a clip to continue, --eval or --compare (see --help)")
    if out is None:
        raise UsageError("add --out FILE.gif for the predicted clip")
    if len(models) > 1:
        raise UsageError("give one --model to predict with (several are for --eval)")
    return PredictJob(clip, out, models[0] if models else default, strip, overwrite)


def _render(result, report, json_out: bool) -> None:
    from dataclasses import asdict

    from dlkit.tasks.frames.infer import CompareResult, EvalResult

    if json_out:
        report.result(json.dumps(asdict(result)))
        return
    if isinstance(result, EvalResult):
        report.result(_table(result))
    elif isinstance(result, CompareResult):
        for name, m in result.rows.items():
            report.info(f"{name}: " + ", ".join(f"{METRIC_NAMES[k]} {v:.2f}" for k, v in m.items()))
        report.result(result.path)
    else:
        if result.metrics:
            report.info(f"frame-predict: against the {result.truth} true frames: " +
                        ", ".join(f"{METRIC_NAMES[k]} {v:.3f}" for k, v in result.metrics.items()))
        report.result(result.gif)
        report.result(result.strip)


def _table(res) -> str:
    cols = list(METRIC_NAMES)
    lines = [f"{res.dataset}: {res.sequences} sequences, 10 -> 10 frames; MSE/MAE per frame (summed over its pixels), "
             f"sharpness = mean gradient magnitude x100 (truth {res.truth_grad:.2f})",
             f"{'predictor':<28}" + "".join(f"{METRIC_NAMES[c]:>11}" for c in cols)]
    for name, m in res.rows.items():
        lines.append(f"{name:<28}" + "".join(f"{m[c]:>11.4f}" if c == "ssim" else f"{m[c]:>11.2f}" for c in cols))
    lines.append("MSE per predicted frame (t+1 .. t+10):")
    for name, pf in res.per_frame.items():
        lines.append(f"{name:<28}" + " ".join(f"{v:6.1f}" for v in pf["mse"]))
    return "\n".join(lines)
