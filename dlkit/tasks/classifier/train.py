"""``classifier-train``: an image classifier trained with the airbench recipe (:mod:`dlkit.vision.airbench`)
on the shared classification loop (:func:`dlkit.vision.classifier.train_epoch`).

With ``max_time`` the schedule follows whichever is further along, steps or wall time: the learning rate
and the lookahead decay reach their end values when the time budget is spent, so a run that is cut short
by a slow or busy machine still ends annealed. The result is a ``classifier`` model file (``OUT/model.safetensors``)
that ``adv-attack`` reads like any other, with the test accuracy at each TTA level in its metadata.

State for ``--resume`` (``OUT/model.state.pt``) is written when a run starts and after every epoch: weights,
optimizer, lookahead average, data-order generator, RNG, step and schedule position. A run interrupted
(Ctrl-C, SIGTERM) resumes at the start of its epoch and then equals an uninterrupted one on the CPU. A resumed
run continues the schedule from where it stopped: the rest of it spreads over the remaining steps or, with
``--max-time``, over this run's time. Under ``torchrun`` each process trains on its share of every epoch
(``--batch-size`` images per process and step) and the ranks agree on one clock, so they stop together.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from dlkit.core.errors import UsageError
from dlkit.core.interrupt import StopSignal
from dlkit.core.optim import check_finite
from dlkit.core.report import Reporter
from dlkit.core.runtime import Runtime, rng_state, set_rng_state
from dlkit.core.state import save_state, state_path
from dlkit.core.training import resume_state, save_and_interrupt, stop_reason
from dlkit.nets.classifiers import AIRBENCH_WIDTHS, build_classifier, count_parameters
from dlkit.vision.airbench import Lookahead, RecipeConfig, lr_factor, make_optimizer, prepare, recipe_config
from dlkit.vision.classifier import Classifier, flip_translate, predict, save_classifier, train_epoch
from dlkit.vision.datasets import ImageData, load_dataset

TASK = "classifier-train"  # of the training state; the model file's task is "classifier"
MODEL = "model.safetensors"
STATE = state_path(MODEL).name
ARCH = "airbench"
# settings a resumed run must share with the saved one (tensor shapes, optimizer groups, data order and subsets)
SHAPE_KEYS = ("dataset", "preset", "disable", "widths", "batch_size", "subset", "test_subset", "seed")
_REQUIRED = ("config", "model", "optimizer", "generator", "rng", "epoch", "step", "seen", "seconds", "p")
DATASETS = {"cifar10": "CIFAR-10", "mnist": "MNIST"}


@dataclass
class TrainConfig:
    dataset: str = "cifar10"
    data: Optional[str] = None
    download: bool = False
    out: str = "runs/classifier"
    preset: str = "airbench"
    disable: Optional[str] = None  # comma list of recipe parts to switch off (dlkit.vision.airbench.PARTS)
    widths: Optional[list] = None  # the three conv groups' channels (None: airbench94's 64, 256, 256)
    epochs: Optional[float] = None  # None: the preset's
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    subset: Optional[int] = None  # train on N random training images
    test_subset: Optional[int] = None  # evaluate on N random test images
    max_time: Optional[float] = None  # seconds
    save_dtype: str = "fp16"
    seed: int = 0
    resume: bool = False


@dataclass
class TrainResult:
    model: str
    epochs: int
    steps: int
    seconds: float
    images_per_s: float
    test_images: int
    test_accuracy: float  # at the recipe's TTA level
    test_accuracy_no_tta: float
    test_accuracy_flip: float  # TTA level 1
    tta: int


def _take(data: ImageData, n: Optional[int], seed: int) -> ImageData:
    if not n or n >= len(data):
        return data
    return data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n])


def load_data(cfg: TrainConfig) -> tuple[ImageData, ImageData]:
    train = load_dataset(cfg.dataset, "train", cfg.data, cfg.download)
    test = load_dataset(cfg.dataset, "test", cfg.data, cfg.download)
    if train.shape != test.shape:
        raise UsageError(f"train images are {train.shape} but test images {test.shape}")
    return _take(train, cfg.subset, cfg.seed), _take(test, cfg.test_subset, cfg.seed + 1)


def arch_kwargs(widths: list | None) -> dict:
    """The model file's architecture settings: the widths only when they are not airbench94's."""
    return {"widths": list(widths)} if widths and tuple(widths) != AIRBENCH_WIDTHS else {}


def build(train: ImageData, widths: list | None = None) -> Classifier:
    """A fresh airbench network whose input normalisation is the training set's per-channel mean and std."""
    x = train.images.float().div_(255)
    mean, std = x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    del x
    c, h, w = train.shape
    kw = arch_kwargs(widths)
    net = build_classifier(ARCH, c, len(train.classes), h, **kw)
    return Classifier(net, arch=ARCH, arch_kwargs=kw, classes=train.classes, input_size=(c, h, w), mean=mean,
                      std=std)


def accuracy_by_tta(model: Classifier, test: ImageData, rt: Runtime, channels_last: bool) -> dict[int, float]:
    """Test accuracy at TTA levels 0, 1 and 2 (:func:`dlkit.vision.classifier.tta_logits`) from 6 views, each
    computed once: the image, its mirror, and the two 1-pixel translations (reflect padding) of both."""
    x = test.images.float().div_(255)
    H, W = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [x, padded[..., :H, :W], padded[..., 2:, 2:]]
    logits = [predict(model, v, rt, 500, 0, channels_last) for u in views for v in (u, u.flip(3))]
    level0, level1 = logits[0], 0.5 * (logits[0] + logits[1])
    level2 = 0.5 * level1 + 0.125 * (logits[2] + logits[3] + logits[4] + logits[5])
    y = test.labels.long()
    return {lvl: float((lg.argmax(1) == y).float().mean()) for lvl, lg in enumerate((level0, level1, level2))}


def train(cfg: TrainConfig, rt: Runtime, report: Reporter, stop: StopSignal | None = None) -> TrainResult:
    stop = stop or StopSignal()
    rc = recipe_config(cfg.preset, cfg.disable, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr)
    state = resume_state(Path(cfg.out) / STATE, TASK, required=_REQUIRED, config=asdict(cfg),
                         shape_keys=SHAPE_KEYS) if cfg.resume else None
    train_set, test = load_data(cfg)
    if len(train_set) // rt.world_size < rc.batch_size:
        raise UsageError(f"{len(train_set)} training images are fewer than one batch of {rc.batch_size}"
                         + (f" for each of {rt.world_size} processes" if rt.world_size > 1 else "")
                         + " (lower --batch-size)")
    run = _start(cfg, rc, rt, report, train_set, state)
    report.info(f"{ARCH}: {count_parameters(run.model):,} parameters; {len(train_set):,} training images, "
                f"batch {rc.batch_size}" + (f" x {rt.world_size} processes" if rt.world_size > 1 else "")
                + f", {rc.epochs} epochs; {rt.precision}, {torch.get_num_threads()} thread(s)")
    _loop(run, train_set, test, stop, time.monotonic())
    s, model = run.s, run.model
    acc = accuracy_by_tta(model, test, rt, rc.channels_last)
    metrics = {"test_accuracy": round(acc[rc.tta], 4), "test_accuracy_no_tta": round(acc[0], 4),
               "test_accuracy_flip": round(acc[1], 4), "tta": rc.tta, "test_images": len(test)}
    run.save()  # the schedule's end (a --resume of it has nothing left to train)
    path = Path(cfg.out) / MODEL
    if rt.is_main:
        _save(model, cfg, rc, metrics, {"epochs": s["epoch"], "steps": s["step"], "seconds": round(s["seconds"]),
                                        "images_seen": s["seen"], "precision": rt.precision,
                                        "threads": torch.get_num_threads()})
    rt.barrier()  # no rank leaves while rank 0 writes
    return TrainResult(str(path), s["epoch"], s["step"], round(s["seconds"], 1),
                       round(s["seen"] / max(s["seconds"], 1e-9), 1), len(test), acc[rc.tta], acc[0], acc[1], rc.tta)


@dataclass
class _Run:
    """What the loop carries: the network (plain and, under torchrun, DDP-wrapped), its optimizer, the lookahead
    average, the data-order generator and how far it has come, ``s`` (saved with them as the state)."""

    cfg: TrainConfig
    rc: RecipeConfig
    rt: Runtime
    report: Reporter
    model: Classifier
    net: torch.nn.Module  # what trains: ``model``, or DDP around it
    opt: torch.optim.Optimizer
    gen: torch.Generator
    s: dict  # epoch, step, seen (images, all ranks), seconds (of training, all runs), p (schedule position)
    lookahead: Optional[Lookahead] = None

    def save(self) -> None:
        """Call on every rank (each rank's RNG state is gathered); rank 0 writes."""
        rng = rng_state(self.rt)
        if self.rt.is_main:
            save_state(Path(self.cfg.out) / STATE, {
                "config": asdict(self.cfg), "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(), "rng": rng, **self.s,
                "lookahead": self.lookahead.slow if self.lookahead is not None else None}, task=TASK)


def _start(cfg: TrainConfig, rc: RecipeConfig, rt: Runtime, report: Reporter, train_set: ImageData,
           state: dict | None) -> _Run:
    """A fresh run (its state saved at once, so a stop in epoch 1 can resume), or the saved ``state``."""
    gen = torch.Generator().manual_seed(cfg.seed)
    model = build(train_set, cfg.widths).to(rt.device)
    prepare(model, train_set.images, rc, gen)
    if rc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    run = _Run(cfg, rc, rt, report, model, rt.wrap(model), make_optimizer(model, rc), gen,
               {"epoch": 0, "step": 0, "seen": 0, "seconds": 0.0, "p": 0.0})
    if state is None:
        if rt.is_main:  # --overwrite: no model of the replaced run stays beside the new run's state
            (Path(cfg.out) / MODEL).unlink(missing_ok=True)
        run.save()
        return run
    model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    set_rng_state(state["rng"], rt.rank)
    run.s = {k: state[k] for k in run.s}
    if state.get("lookahead") is not None:
        run.lookahead = Lookahead(model)
        run.lookahead.slow = state["lookahead"]
    report.info(f"resuming at epoch {run.s['epoch']}, step {run.s['step']} ({100 * min(run.s['p'], 1.0):.0f}% of "
                "the schedule done)")
    return run


def _elapsed(rt: Runtime, t0: float) -> float:
    """Seconds since ``t0``; under torchrun the largest over the ranks, so every rank follows one clock."""
    dt = time.monotonic() - t0
    return rt.all_reduce_max(int(dt * 1000)) / 1000 if rt.distributed else dt


def _schedule(run: _Run, total: int, t0: float, clock: dict):
    """``progress(step)`` in [0, 1]: how far along the schedule is (the learning rate, the lookahead decay and
    the end follow it). A fresh run: ``step / total`` or, with --max-time, the fraction of the time spent,
    whichever is further. A resumed run continues from its saved position ``p0``: the rest of the schedule
    spreads over the remaining steps, or over this run's --max-time."""
    s, budget, rt = run.s, run.cfg.max_time, run.rt
    p0, s0 = s["p"], s["step"]
    follows_steps = p0 == s0 / total  # the run so far followed steps: the same formula, bit for bit

    def progress(step: int) -> float:
        if follows_steps or s0 >= total:
            p = step / total
        else:
            p = p0 + (1 - p0) * (step - s0) / (total - s0)
        if budget:
            now = clock["t"] if rt.distributed else time.monotonic() - t0
            p = max(p, p0 + (1 - p0) * now / budget)
        s["p"] = p
        return p
    return progress


def _loop(run: _Run, train_set: ImageData, test: ImageData, stop: StopSignal, t0: float) -> None:
    """The epochs: schedule, lookahead, whitening-bias freeze, a cheap test check and the state after each epoch."""
    cfg, rc, rt, s, report = run.cfg, run.rc, run.rt, run.s, run.report
    per_epoch = len(train_set) // rt.world_size // rc.batch_size
    total = max(1, math.ceil(rc.epochs * per_epoch))
    clock = {"t": 0.0}  # under torchrun: the agreed seconds since t0, as of the last step
    progress = _schedule(run, total, t0, clock)
    seconds0, why = s["seconds"], {"reason": None}

    def on_step(step: int, loss) -> bool:
        if rt.distributed:
            clock["t"] = _elapsed(rt, t0)
        if loss is not None:
            check_finite(loss, step, keep=str(Path(cfg.out) / STATE))
            report.info(f"step {step}/{total} loss {loss:.4f} {time.monotonic() - t0:.0f}s")
        if rc.lookahead and step >= rc.lookahead_start_epochs * per_epoch and step % rc.lookahead_every == 0:
            if run.lookahead is None:
                run.lookahead = Lookahead(run.model)
            else:
                run.lookahead.update(run.model, run.lookahead.decay(progress(step), rc))
        why["reason"] = stop_reason(stop, rt, t0=t0, step=step)  # signals and a closed stdout, on every rank
        return why["reason"] is not None or progress(step) >= 1.0

    augment = partial(flip_translate, flip=rc.flip, pad=rc.translate)
    check = test.subset(slice(None, None, 5))  # a fifth, strided (files may be sorted by class)
    if s["step"] and (s["p"] >= 1.0 or s["step"] >= total):
        report.info("the saved run's schedule is complete: nothing left to train (its test accuracy is measured again)")
    while progress(s["step"]) < 1.0 and s["step"] < total:
        _freeze_whitening_bias(run)
        res = train_epoch(run.net, train_set.images, train_set.labels, run.opt, rt, batch_size=rc.batch_size,
                          generator=run.gen, augment=augment, lr_at=lambda i: lr_factor(progress(i), rc),
                          step=s["step"], label_smoothing=rc.label_smoothing, log_every=10, on_step=on_step,
                          channels_last=rc.channels_last)
        if why["reason"] == "interrupted":  # the state of the last finished epoch is on disk already
            save_and_interrupt(rt, lambda: None, f"in epoch {s['epoch'] + 1} (it resumes at the epoch's start)",
                               Path(cfg.out) / STATE)
        s["step"], s["epoch"] = s["step"] + res.steps, s["epoch"] + 1
        s["seen"] += res.images * rt.world_size
        s["seconds"] = seconds0 + time.monotonic() - t0
        if run.lookahead is not None:
            run.lookahead.update(run.model, 1.0)  # copy the average back at the end of each epoch
        logits = predict(run.model, check.images, rt, 500, 0, rc.channels_last)
        acc = float((logits.argmax(1) == check.labels).float().mean())
        report.metrics("epoch", epoch=s["epoch"], step=s["step"], loss=round(res.loss, 4),
                       train_acc=round(res.accuracy, 4), test_acc_no_tta=round(acc, 4),
                       images_per_s=round(res.images / res.seconds, 1), seconds=round(time.monotonic() - t0))
        run.save()
    if cfg.max_time and s["step"] < total and s["p"] >= 1.0:
        report.info(f"--max-time reached: the schedule ended (annealed) at step {s['step']} of {total}")


def _freeze_whitening_bias(run: _Run) -> None:
    """The whitening conv's bias trains for the first ``whiten_bias_epochs`` only. Under torchrun DDP reduces
    the gradients of the parameters that trained when it was built, so it is built again when the set changes."""
    if not run.rc.whiten_freeze:
        return
    bias = run.model.net.whiten.bias
    trains = run.s["epoch"] < run.rc.whiten_bias_epochs
    if bias.requires_grad != trains:
        bias.requires_grad_(trains)
        if run.rt.distributed:
            run.net = run.rt.wrap(run.model)


def _save(model: Classifier, cfg: TrainConfig, rc: RecipeConfig, metrics: dict, run: dict) -> Path:
    data = f"{DATASETS.get(cfg.dataset, cfg.dataset)} ({Path(cfg.data).name if cfg.data else 'torchvision'})"
    recipe = {"preset": cfg.preset, "disable": cfg.disable or "", **asdict(rc), **run}
    out = Path(cfg.out) / MODEL
    return save_classifier(out, model, arch=ARCH, arch_kwargs=model.arch_kwargs, classes=model.classes,
                           input_size=model.input_size, mean=model.mean, std=model.std, metrics=metrics, recipe=recipe,
                           training={"data": data, "train_images": run["images_seen"] // max(run["epochs"], 1)},
                           headline=f"test accuracy {100 * metrics['test_accuracy']:.2f}% (TTA level {rc.tta})",
                           dtype=cfg.save_dtype)
