"""`frame-predict`'s three jobs: continue a clip, score models on Moving MNIST, draw the comparison slide.

Each job is a dataclass that checks itself (:meth:`check`, before torch or a model is loaded); :func:`run` does
the job and returns its result for the command to print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dlkit.core.errors import DataError, UsageError
from dlkit.core.io import guard_output
from dlkit.core.report import Reporter
from dlkit.core.runtime import Runtime
from dlkit.tasks.frames import clips
from dlkit.tasks.frames.metrics import Scores, copy_last, mean_frame, measure

TASK = "frames"
DEFAULT_MODEL = "moving-mnist-mse"


def load_model(spec: str, device="cpu"):
    """A frames model by NAME or path -> (model in eval mode, meta); every problem one ModelFileError line."""
    from dlkit.core.config import config_from_dict
    from dlkit.core.loader import load_model as load
    from dlkit.tasks.frames.model import FramesConfig, build_model

    return load(spec, TASK, lambda meta: build_model(config_from_dict(FramesConfig, meta.get("config"), "model config")),
                device=device)


@torch.no_grad()
def predict(model: torch.nn.Module, context: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """(B, T_in, C, H, W) in [0, 1] -> (B, T_out, C, H, W) float32 on the CPU."""
    with rt.autocast():
        return model(context.to(rt.device)).float().clamp(0, 1).cpu()


# ------------------------------------------------------------------ jobs
@dataclass
class PredictJob:
    """Continue the clip ``input`` (GIF, folder of frames, .npy); write ``out`` (GIF) and ``strip`` (PNG)."""

    input: Path
    out: Path
    model: str = DEFAULT_MODEL
    strip: Path | None = None
    overwrite: bool = False
    max_pixels: int = clips.MAX_PIXELS

    def check(self) -> None:
        if self.out.suffix.lower() != ".gif":
            raise UsageError(f"--out {self.out}: the prediction is written as an animated .gif")
        self.strip = self.strip or self.out.with_suffix(".png")
        if self.strip.suffix.lower() != ".png":
            raise UsageError(f"--strip {self.strip}: the strip is a .png")
        for p in (self.out, self.strip):
            guard_output(p, inputs=[self.input], overwrite=self.overwrite)


@dataclass
class EvalJob:
    """Score ``models`` and the baselines on the first ``num`` sequences of ``data`` (mnist.npz or .npy)."""

    data: Path
    models: list[str] = field(default_factory=list)
    num: int = 10_000
    batch_size: int = 100

    def check(self) -> None:
        if self.num < 1 or self.batch_size < 1:
            raise UsageError("--num and --batch-size must be at least 1")


@dataclass
class CompareJob:
    """The slide: truth / model A / model B over the predicted frames of one sequence."""

    models: tuple[str, str]
    out: Path
    data: Path | None = None  # a test sequence of the generated set (or an .npy file) ...
    index: int = 0
    input: Path | None = None  # ... or a clip of the user's with at least t_in + t_out frames
    overwrite: bool = False

    def check(self) -> None:
        if (self.data is None) == (self.input is None):
            raise UsageError("--compare needs the sequence: --data FILE (with --index) or one INPUT clip")
        if self.out.suffix.lower() != ".png":
            raise UsageError(f"--out {self.out}: the slide is written as a .png")
        guard_output(self.out, inputs=[p for p in (self.data, self.input) if p], overwrite=self.overwrite)


@dataclass
class PredictResult:
    gif: str
    strip: str
    context: int
    predicted: int
    truth: int
    metrics: dict = field(default_factory=dict)


@dataclass
class EvalResult:
    dataset: str
    sequences: int
    rows: dict  # name -> mean metrics
    per_frame: dict  # name -> metric -> list over predicted frames
    truth_grad: float


@dataclass
class CompareResult:
    path: str
    rows: dict  # "truth" / model names -> {mse, grad}


def run(job, rt: Runtime, report: Reporter):
    """Do ``job`` (a PredictJob, EvalJob or CompareJob) and return its result."""
    job.check()
    if isinstance(job, PredictJob):
        return predict_clip(job, rt, report)
    if isinstance(job, EvalJob):
        return evaluate(job, rt, report)
    return compare(job, rt, report)


def _split(clip: np.ndarray, t_in: int, t_out: int, name) -> tuple[np.ndarray, np.ndarray]:
    if len(clip) < t_in:
        raise DataError(f"'{name}' has {len(clip)} frame(s); the model needs at least {t_in} frames of context")
    return clip[:t_in], clip[t_in:t_in + t_out]


def predict_clip(job: PredictJob, rt: Runtime, report: Reporter) -> PredictResult:
    raw = clips.read_clip(job.input, job.max_pixels)  # before the model: a bad clip fails fast
    model, meta = load_model(job.model, rt.device)
    cfg = model.cfg
    _split(raw, cfg.t_in, cfg.t_out, job.input)  # enough frames?
    if raw.shape[1:3] != (cfg.size, cfg.size):
        report.info(f"frame-predict: frames of {raw.shape[2]}x{raw.shape[1]} resized to the model's {cfg.size}x{cfg.size}")
    ctx, truth = _split(clips.fit_clip(raw, cfg.channels, cfg.size), cfg.t_in, cfg.t_out, job.input)
    x = torch.from_numpy(ctx).permute(0, 3, 1, 2).unsqueeze(0)  # (1, T_in, C, H, W)
    pred = predict(model, x, rt)[0].permute(0, 2, 3, 1).numpy()  # (T_out, H, W, C)
    metrics = {}
    if len(truth):
        t = torch.from_numpy(truth).permute(0, 3, 1, 2).unsqueeze(0)
        p = torch.from_numpy(pred[:len(truth)]).permute(0, 3, 1, 2).unsqueeze(0)
        metrics = {k: round(float(v.mean()), 4) for k, v in measure(p, t).items()}
    gif = clips.write_gif(np.concatenate([ctx, pred]), job.out)
    strip = clips.write_strip(ctx, pred, truth if len(truth) else None, job.strip)
    return PredictResult(str(gif), str(strip), len(ctx), len(pred), len(truth), metrics)


def evaluate(job: EvalJob, rt: Runtime, report: Reporter) -> EvalResult:
    from dlkit.tasks.frames.data import T_IN, open_sequences

    seqs = open_sequences(job.data, job.num)
    models = {}
    for spec in job.models:
        m, meta = load_model(spec, rt.device)
        if (m.cfg.t_in, m.cfg.channels, m.cfg.size) != (T_IN, 1, 64):
            raise UsageError(f"model '{meta['name']}' is not a Moving MNIST model (10 grey 64x64 frames in)")
        models[meta["name"] if meta["name"] not in models else spec] = m
    scores = {name: Scores() for name in [*models, "copy-last", "mean-frame"]}
    truth = Scores()
    n = seqs.size
    with report.progress(n, "frame-predict --eval") as update:
        for start in range(0, n, job.batch_size):
            video = torch.from_numpy(seqs.get(start, min(job.batch_size, n - start))).unsqueeze(2).float() / 255.0
            ctx, fut = video[:, :T_IN], video[:, T_IN:T_IN + 10]
            for name, m in models.items():
                scores[name].add(predict(m, ctx, rt)[:, :fut.shape[1]], fut)
            scores["copy-last"].add(copy_last(ctx, fut.shape[1]), fut)
            scores["mean-frame"].add(mean_frame(ctx, fut.shape[1]), fut)
            truth.add(fut, fut)
            update(len(video))
    return EvalResult(seqs.name, n, {k: s.mean() for k, s in scores.items()}, {k: s.per_frame() for k, s in scores.items()},
                      truth.mean()["grad"])


def _compare_sequence(job: CompareJob) -> np.ndarray:
    """(T, H, W, 1) float in [0, 1]: sequence ``index`` of --data, or the user's clip."""
    if job.input is not None:
        return clips.read_clip(job.input)
    from dlkit.tasks.frames.data import open_sequences

    seqs = open_sequences(job.data, job.index + 1)
    if job.index >= seqs.size:
        raise UsageError(f"--index {job.index}: '{job.data}' holds {seqs.size} sequences")
    return seqs.get(job.index, 1)[0][..., None].astype(np.float32) / 255.0


def compare(job: CompareJob, rt: Runtime, report: Reporter) -> CompareResult:
    from dlkit.tasks.frames.figures import slide
    from dlkit.tasks.frames.metrics import grad, mse

    raw = _compare_sequence(job)
    nets = [load_model(spec, rt.device) for spec in job.models]
    cfg = nets[0][0].cfg
    clip = clips.fit_clip(raw, cfg.channels, cfg.size)
    ctx, truth = _split(clip, cfg.t_in, cfg.t_out, job.input or job.data)
    if len(truth) == 0:
        raise DataError(f"'{job.input}' has no frames after the {cfg.t_in} context frames: nothing to compare with")
    x = torch.from_numpy(ctx).permute(0, 3, 1, 2).unsqueeze(0)
    t = torch.from_numpy(truth).permute(0, 3, 1, 2).unsqueeze(0)
    rows = {"truth": (t[0], {"grad": float(grad(t).mean())})}
    for model, meta in nets:
        if (model.cfg.t_in, model.cfg.channels, model.cfg.size) != (cfg.t_in, cfg.channels, cfg.size):
            raise UsageError(f"--compare: '{meta['name']}' and '{nets[0][1]['name']}' read different clips")
        p = predict(model, x, rt)[:, :t.shape[1]]
        name = meta["name"] if meta["name"] not in rows else meta["path"]
        rows[name] = (p[0], {"mse": float(mse(p, t).mean()), "grad": float(grad(p).mean())})
    path = slide({k: v[0] for k, v in rows.items()}, {k: v[1] for k, v in rows.items()}, job.out, cfg.t_in)
    return CompareResult(str(path), {k: {m: round(x, 3) for m, x in v[1].items()} for k, v in rows.items()})
