"""One command, several runs: the same network and hyperparameters trained on each corruption of the data.

Zhang et al. 2017 defaults: SGD with momentum 0.9, learning rate 0.1 (Inception) or 0.01 (AlexNet, MLPs)
multiplied by 0.95 after every epoch, batch 128, no weight decay, dropout or augmentation. The loop is the
shared classification loop (:func:`dlkit.vision.classifier.train_epoch`); this module only chooses the
data, stops at the fit threshold and keeps the records the figures need.

State for ``--resume`` (``OUT/state.pt``) is written when a run starts and at the end of every epoch: the
finished runs and the current run's weights, optimizer, epoch, step, data-order generator and loss curve.
Each run seeds its initialisation from (``--seed``, corruption), so an interrupted command resumes from its
last finished epoch and gives the same result as an uninterrupted one (on CPU, with the same --threads:
a matmul summed over another number of threads differs in the last bits).
"""

from __future__ import annotations

import json
import re
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from dlkit.core.atomic import atomic_write_bytes
from dlkit.core.state import save_state
from dlkit.core.errors import DataError, UsageError
from dlkit.core.interrupt import StopSignal
from dlkit.core.optim import check_finite
from dlkit.core.report import Reporter
from dlkit.core.runtime import Runtime, rng_state, set_rng_state, unwrap
from dlkit.core.training import resume_state, save_and_interrupt, stop_reason
from dlkit.tasks.random_labels.data import Corruption, corrupt, parse_corruptions, prepare, take_subset
from dlkit.tasks.random_labels.model import ARCHS, build_model, default_lr
from dlkit.vision.classifier import evaluate, flip_translate, save_classifier, train_epoch
from dlkit.vision.datasets import ImageData, load_dataset

TASK = "random-labels"
STATE = "state.pt"
RESULTS = "results.json"
SHAPE_KEYS = ("dataset", "data", "arch", "corruptions", "subset", "test_subset", "crop", "image_size", "seed",
              "batch_size", "dropout", "whiten")


@dataclass
class FitConfig:
    dataset: Optional[str] = "cifar10"  # mnist | cifar10 | None (an image folder in `data`)
    data: Optional[str] = None
    download: bool = False
    corruptions: str = "random"
    arch: str = "mlp-1x512"
    out: str = "runs/random-labels"
    subset: Optional[int] = None
    test_subset: Optional[int] = None
    crop: Optional[int] = None  # None: 28 for CIFAR-10 (paper), no crop otherwise
    image_size: Optional[int] = None  # resize image-folder images to this square size
    whiten: bool = True
    lr: Optional[float] = None  # None: the paper's default for the architecture
    lr_decay: float = 0.95
    momentum: float = 0.9
    batch_size: int = 128
    weight_decay: float = 0.0
    dropout: float = 0.0
    random_crop: bool = False
    until_fit: bool = False
    fit_threshold: float = 1.0
    max_epochs: int = 100
    max_time: Optional[float] = None  # seconds, this invocation
    seed: int = 0
    resume: bool = False
    save_dtype: str = "fp32"
    figures: bool = True


@dataclass
class RunResult:
    corruption: str
    arch: str
    label_level: Optional[float]
    train_acc: float  # on the (corrupted) training set, eval mode
    test_acc: float  # on the true test labels
    train_loss: float
    epochs: int
    steps: int
    steps_to_fit: Optional[int]
    fitted: bool
    seconds: float
    images_per_s: float
    model: str
    curve: list = field(default_factory=list)  # [(step, mean training loss of the window)]
    slowdown: Optional[float] = None  # steps to fit / steps to fit with true labels


@dataclass
class FitResult:
    runs: list[RunResult]
    out: str
    figures: list[str]
    stopped: Optional[str] = None  # "max-time" when --max-time ended the command early
    config: dict = field(default_factory=dict)


def load_data(cfg: FitConfig, report: Reporter) -> tuple[ImageData, ImageData, int]:
    """Training and test sets, cropped and subset as configured (an image folder without test/ holds out 1/6),
    and the size of the whole training set (the learning-rate decay counts its epochs)."""
    train = load_dataset(cfg.dataset, "train", cfg.data, cfg.download, cfg.image_size, warn=report.warn)
    try:
        test = load_dataset(cfg.dataset, "test", cfg.data, cfg.download, cfg.image_size, warn=report.warn)
    except DataError:
        if cfg.data is None or not Path(cfg.data).is_dir():
            raise
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
        n_test = max(1, len(train) // 6)
        test, train = train.subset(perm[:n_test]), train.subset(perm[n_test:])
        report.info(f"{cfg.data} has no test/ folder: holding out {n_test} images as the test set")
    folder = cfg.data is not None and Path(cfg.data).is_dir()
    crop = cfg.crop if cfg.crop is not None else (28 if cfg.dataset == "cifar10" and not folder else None)
    train, test = prepare(train, crop), prepare(test, crop)
    return (take_subset(train, cfg.subset, cfg.seed), take_subset(test, cfg.test_subset, cfg.seed + 1, "--test-subset"),
            len(train))


def fit(cfg: FitConfig, rt: Runtime, report: Reporter, stop: StopSignal | None = None) -> FitResult:
    """Train ``cfg.arch`` once per corruption; returns the runs (and writes models, results and figures)."""
    stop = stop or StopSignal()
    corruptions = parse_corruptions(cfg.corruptions)
    if cfg.arch not in ARCHS:
        raise UsageError(f"unknown architecture '{cfg.arch}': expected one of {', '.join(ARCHS)}")
    if not 0.0 < cfg.fit_threshold <= 1.0:
        raise UsageError(f"--fit-threshold must be in (0, 1] (got {cfg.fit_threshold})")
    out = Path(cfg.out)
    check_options(cfg)
    state = _load_state(cfg, out / STATE) if cfg.resume else None
    train, test, n_full = load_data(cfg, report)
    if state is None and rt.is_main:
        _clear_previous(out)  # --overwrite: no model of a corruption left out this time may stay behind
    _check_arch_fits(cfg, train)
    decay_every = max(1, n_full // cfg.batch_size)
    report.start("fit-random-labels", f"{len(train)} training / {len(test)} test images {tuple(train.shape)}, "
                 f"{len(train.classes)} classes; {cfg.arch}; corruptions: {', '.join(c.name for c in corruptions)}",
                 rt, task=TASK, arch=cfg.arch, corruptions=[c.name for c in corruptions], train_images=len(train))
    done = [RunResult(**r) for r in state["done"]] if state else []
    t_start = time.monotonic()
    stopped = None
    for i, c in enumerate(corruptions):
        if any(r.corruption == c.name for r in done):
            continue
        current = state.get("current") if state else None
        current = current if current and current.get("corruption") == c.name else None
        result = run_one(cfg, rt, report, stop, c, train, test, done, current, t_start, f"{i + 1}/{len(corruptions)}",
                         decay_every)
        if result is None:
            stopped = "max-time"
            break
        done.append(result)
        state = None
        if rt.is_main:
            save_state(out / STATE, {"config": asdict(cfg), "done": [asdict(r) for r in done], "current": None},
                            task=TASK)
    _slowdowns(done)
    figures: list[str] = []
    if rt.is_main:
        atomic_write_bytes(out / RESULTS, json.dumps([asdict(r) for r in done], indent=1).encode())
        if cfg.figures and done:
            from dlkit.tasks.random_labels.figures import save_figures

            figures = [str(p) for p in save_figures(done, out, f"{cfg.arch} on {_data_name(cfg)}")]
    return FitResult(done, str(out), figures, stopped, asdict(cfg))


def run_one(cfg: FitConfig, rt: Runtime, report: Reporter, stop: StopSignal, c: Corruption, train: ImageData,
            test: ImageData, done: list[RunResult], current: dict | None, t_start: float, which: str, decay_every: int) -> RunResult | None:
    """Train one corruption to the fit threshold / max epochs; None when --max-time stopped it (state saved).

    The learning rate is multiplied by ``lr_decay`` every ``decay_every`` steps: one epoch of the *whole*
    training set, so that a ``--subset`` run sees the paper's learning rate at the same step (with 1,000
    images an epoch is 7 steps, and 0.95 per such epoch would stop learning long before a fit)."""
    x_train, x_test = corrupt(train, test, c, cfg.seed)
    run, lr0 = _start_run(cfg, rt, report, c, train, done, current)
    model, save = run.model, lambda: _save_current(cfg, rt, done, c, run)
    augment = (lambda x, g: flip_translate(x, g, flip=False, pad=2)) if cfg.random_crop else None
    steps_per_epoch = max(1, len(x_train) // rt.world_size // cfg.batch_size)
    log_every = max(1, steps_per_epoch // 8)
    fitted, train_acc, train_loss, reason = False, 0.0, float("nan"), None

    def on_step(s: int, loss: float | None) -> bool:
        nonlocal reason
        if loss is not None:
            run.curve.append((s, loss))
        reason = stop_reason(stop, rt, t0=t_start, max_time_s=cfg.max_time, step=s)
        return reason is not None

    with report.progress(cfg.max_epochs, f"{c.name} ({which})", start=run.epoch) as update:
        while run.epoch < cfg.max_epochs:
            res = train_epoch(model, x_train.images, x_train.labels, run.opt, rt, batch_size=cfg.batch_size,
                              generator=run.gen, augment=augment, lr_at=lambda s: lr0 * cfg.lr_decay ** (s // decay_every),
                              step=run.step, log_every=log_every, on_step=on_step)
            if reason == "interrupted":  # the state is that of the last finished epoch, already saved
                save_and_interrupt(rt, lambda: None, f"during {c.name}, epoch {run.epoch + 1} (it restarts at that "
                                   "epoch)", Path(cfg.out) / STATE)
            if reason == "max-time":
                report.warn(f"--max-time reached during {c.name}; continue with --resume")
                return None
            run.step, run.epoch = run.step + res.steps, run.epoch + 1
            run.seconds += res.seconds
            run.images += res.images * rt.world_size
            check_finite(rt.all_reduce_mean(res.loss), run.step, keep=str(Path(cfg.out) / STATE))  # all ranks alike
            running = rt.all_reduce_mean(res.accuracy)
            if running >= cfg.fit_threshold - 0.05 or run.epoch == cfg.max_epochs:
                train_loss, train_acc = evaluate(model, x_train.images, x_train.labels, rt)
                fitted = train_acc >= cfg.fit_threshold
            update(1, loss=res.loss, acc=train_acc if fitted else running)
            report.event("epoch", corruption=c.name, epoch=run.epoch, step=run.step, loss=res.loss,
                         train_acc_running=running, lr=lr0 * cfg.lr_decay ** ((run.step - 1) // decay_every))
            save()
            if fitted and cfg.until_fit:
                break
    return _finish_run(cfg, rt, c, run, x_train, x_test, fitted, train_acc, train_loss)


@dataclass
class _Run:
    """One corruption's run in progress: the network, its optimizer and data order, and how far it has come
    (what the state file holds as ``current``)."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    epoch: int = 0
    step: int = 0
    curve: list = field(default_factory=list)  # (step, loss) at each logging interval
    seconds: float = 0.0
    images: int = 0


def _start_run(cfg: FitConfig, rt: Runtime, report: Reporter, c: Corruption, train: ImageData,
               done: list[RunResult], current: dict | None) -> tuple[_Run, float]:
    """A fresh run (its state saved at once) or the saved ``current`` one; and its initial learning rate."""
    # Each run's initialisation and dropout draw from a seed of its own, not from wherever the previous
    # run left the global RNG: a run started after a --resume is then the run an uninterrupted command makes.
    torch.manual_seed(cfg.seed + zlib.crc32(c.name.encode()))
    model = build_model(cfg.arch, train.shape, train.classes, cfg.dropout, cfg.whiten, *_moments(cfg, train))
    lr0 = cfg.lr if cfg.lr is not None else default_lr(cfg.arch)
    model = rt.wrap(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr0, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    run = _Run(model, opt, torch.Generator().manual_seed(cfg.seed + 7919))
    if current is not None:
        unwrap(model).load_state_dict(current["model"])
        opt.load_state_dict(current["optimizer"])
        run.gen.set_state(current["generator"])
        set_rng_state(current["rng"], rt.rank)
        run.epoch, run.step, run.curve = current["epoch"], current["step"], [tuple(p) for p in current["curve"]]
        run.seconds, run.images = current["seconds"], current["images"]
        report.info(f"resuming {c.name} at epoch {run.epoch}")
    else:  # a state to resume from even if the first epoch is interrupted
        _save_current(cfg, rt, done, c, run)
    return run, lr0


def _finish_run(cfg: FitConfig, rt: Runtime, c: Corruption, run: _Run, x_train: ImageData, x_test: ImageData,
                fitted: bool, train_acc: float, train_loss: float) -> RunResult:
    """The run's final training and test accuracy, its result and its model file (rank 0)."""
    model = run.model
    if not fitted or train_loss != train_loss:
        train_loss, train_acc = evaluate(model, x_train.images, x_train.labels, rt)
        fitted = train_acc >= cfg.fit_threshold
    _, test_acc = evaluate(model, x_test.images, x_test.labels, rt)
    path = Path(cfg.out) / f"{c.slug}.safetensors"
    result = RunResult(c.name, cfg.arch, c.label_level, train_acc, test_acc, train_loss, run.epoch, run.step,
                       run.step if fitted else None, fitted, round(run.seconds, 2),
                       run.images / max(run.seconds, 1e-9), str(path), run.curve)
    if rt.is_main:
        _save_model(cfg, unwrap(model), path, result)
    return result


_OUTPUTS = re.compile(r"^((true|random|shuffled-pixels|random-pixels|gaussian|partial-[0-9.e+-]+)\.(safetensors|md)"
                      r"|fig1[abc]_[a-z_]+\.png|" + re.escape(RESULTS) + "|" + re.escape(STATE) + ")$")


def _clear_previous(out: Path) -> list[Path]:
    """Remove what an earlier run wrote into ``out`` (its models, results, figures, state): the run folder
    policy lets a fresh run in only with --overwrite, which replaces the whole run, not only the files this
    run happens to write again. Files this command never writes are left alone."""
    removed = []
    if out.is_dir():
        for p in out.iterdir():
            if _OUTPUTS.match(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


MAX_IMAGE_SIZE = 512  # --image-size of folder images: every image is kept decoded, C x N x N bytes


def check_options(cfg: FitConfig) -> None:
    from dlkit.core.limits import at_most

    at_most("--image-size", cfg.image_size, MAX_IMAGE_SIZE, "every training image is kept decoded in memory "
            "(3 x N x N bytes each) and the MLPs' first layer has 3 x N x N x 512 weights")
    at_most("--batch-size", cfg.batch_size, 8192, "a batch's activations are kept for the backward pass")


def _check_arch_fits(cfg: FitConfig, train: ImageData) -> None:
    """One forward pass of two blank images: a network whose pooling needs more pixels than the images have
    (a ResNet on 1x1 images) is one line before any training, not a torch error mid-run."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about empty layers built for tiny inputs
        net = build_model(cfg.arch, train.shape, train.classes, cfg.dropout, cfg.whiten).eval()
        try:
            with torch.no_grad():
                net(torch.zeros(2, *train.shape))
        except RuntimeError as e:
            c, h, w = train.shape
            raise DataError(f"--arch {cfg.arch} cannot take {w}x{h} images ({str(e).splitlines()[0][:100]}); "
                            "resize them with --image-size (e.g. 32)") from None


def _moments(cfg: FitConfig, train: ImageData) -> tuple[tuple, tuple]:
    if cfg.whiten:
        return (0.0,), (1.0,)
    from dlkit.tasks.random_labels.data import channel_moments

    mean, std = channel_moments(train.images)
    return tuple(mean.tolist()), tuple(std.clamp_min(1e-3).tolist())


def _save_current(cfg: FitConfig, rt: Runtime, done: list[RunResult], c: Corruption, run: _Run) -> None:
    rng = rng_state(rt)  # every rank's: call on every rank
    if not rt.is_main:
        return
    current = {"corruption": c.name, "model": unwrap(run.model).state_dict(), "optimizer": run.opt.state_dict(),
               "generator": run.gen.get_state(), "rng": rng, "epoch": run.epoch, "step": run.step,
               "curve": [list(p) for p in run.curve], "seconds": run.seconds, "images": run.images}
    save_state(Path(cfg.out) / STATE, {"config": asdict(cfg), "done": [asdict(r) for r in done],
                                             "current": current}, task=TASK)


def _save_model(cfg: FitConfig, net, path: Path, r: RunResult) -> None:
    recipe = {k: v for k, v in asdict(cfg).items() if k not in ("out", "resume", "figures", "data")}
    save_classifier(path, net, arch=net.arch, arch_kwargs=net.arch_kwargs, classes=net.classes,
                    input_size=net.input_size, mean=net.mean, std=net.std, whiten=net.whiten,
                    metrics={"train_accuracy": r.train_acc, "test_accuracy": r.test_acc, "fitted": r.fitted,
                             "epochs": r.epochs, "steps": r.steps},
                    recipe={"command": "fit-random-labels", **recipe},
                    training={"data": _data_name(cfg), "corruption": r.corruption},
                    headline=f"{r.corruption}: train {100 * r.train_acc:.2f}% / test {100 * r.test_acc:.2f}%",
                    dtype=cfg.save_dtype)


def _data_name(cfg: FitConfig) -> str:
    name = cfg.dataset if cfg.data is None or not Path(cfg.data).is_dir() else Path(cfg.data).name
    return f"{name} (subset {cfg.subset})" if cfg.subset else str(name)


def _slowdowns(runs: list[RunResult]) -> None:
    base = next((r.steps_to_fit for r in runs if r.corruption == "true" and r.fitted), None)
    for r in runs:
        r.slowdown = round(r.steps_to_fit / base, 2) if base and r.fitted else None


def _load_state(cfg: FitConfig, path: Path) -> dict | None:
    return resume_state(path, TASK, required=("config", "done"), config=asdict(cfg), shape_keys=SHAPE_KEYS)
