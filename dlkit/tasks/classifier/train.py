"""``classifier-train``: an image classifier trained with the airbench recipe (:mod:`dlkit.vision.airbench`)
on the shared classification loop (:func:`dlkit.vision.classifier.train_epoch`).

With ``max_time`` the schedule follows whichever is further along, steps or wall time: the learning rate
and the lookahead decay reach their end values when the time budget is spent, so a run that is cut short
by a slow or busy machine still ends annealed. The result is a ``classifier`` model file (``OUT/model.safetensors``)
that ``adv-attack`` reads like any other, with the test accuracy at each TTA level in its metadata.
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

from dlkit.core.errors import Interrupted, UsageError
from dlkit.core.interrupt import StopSignal
from dlkit.core.optim import check_finite
from dlkit.core.report import Reporter
from dlkit.core.runtime import Runtime
from dlkit.nets.classifiers import build_classifier, count_parameters
from dlkit.vision.airbench import Lookahead, RecipeConfig, lr_factor, make_optimizer, prepare, recipe_config
from dlkit.vision.classifier import Classifier, flip_translate, predict, save_classifier, train_epoch
from dlkit.vision.datasets import ImageData, load_dataset

MODEL = "model.safetensors"
ARCH = "airbench"
DATASETS = {"cifar10": "CIFAR-10", "mnist": "MNIST"}


@dataclass
class TrainConfig:
    dataset: str = "cifar10"
    data: Optional[str] = None
    download: bool = False
    out: str = "runs/classifier"
    preset: str = "airbench"
    disable: Optional[str] = None  # comma list of recipe parts to switch off (dlkit.vision.airbench.PARTS)
    epochs: Optional[float] = None  # None: the preset's
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    subset: Optional[int] = None  # train on N random training images
    test_subset: Optional[int] = None  # evaluate on N random test images
    max_time: Optional[float] = None  # seconds
    save_dtype: str = "fp16"
    seed: int = 0


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


def build(train: ImageData) -> Classifier:
    """A fresh airbench network whose input normalisation is the training set's per-channel mean and std."""
    x = train.images.float().div_(255)
    mean, std = x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    del x
    c, h, w = train.shape
    net = build_classifier(ARCH, c, len(train.classes), h)
    return Classifier(net, arch=ARCH, classes=train.classes, input_size=(c, h, w), mean=mean, std=std)


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
    train_set, test = load_data(cfg)
    if len(train_set) < rc.batch_size:
        raise UsageError(f"{len(train_set)} training images are fewer than one batch of {rc.batch_size} "
                         "(lower --batch-size)")
    gen = torch.Generator().manual_seed(cfg.seed)
    model = build(train_set).to(rt.device)
    prepare(model, train_set.images, rc, gen)
    if rc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    report.info(f"{ARCH}: {count_parameters(model):,} parameters; {len(train_set):,} training images, "
                f"batch {rc.batch_size}, {rc.epochs} epochs; {rt.precision}, {torch.get_num_threads()} thread(s)")
    t0 = time.monotonic()
    steps, epochs, seen = _loop(model, train_set, test, rc, cfg, rt, report, stop, gen, t0)
    seconds = time.monotonic() - t0
    acc = accuracy_by_tta(model, test, rt, rc.channels_last)
    metrics = {"test_accuracy": round(acc[rc.tta], 4), "test_accuracy_no_tta": round(acc[0], 4),
               "test_accuracy_flip": round(acc[1], 4), "tta": rc.tta, "test_images": len(test)}
    path = _save(model, cfg, rc, metrics, {"epochs": epochs, "steps": steps, "seconds": round(seconds),
                                           "images_seen": seen, "precision": rt.precision,
                                           "threads": torch.get_num_threads()})
    return TrainResult(str(path), epochs, steps, round(seconds, 1), round(seen / max(seconds, 1e-9), 1), len(test),
                       acc[rc.tta], acc[0], acc[1], rc.tta)


def _loop(model, train_set, test, rc: RecipeConfig, cfg: TrainConfig, rt, report, stop, gen, t0) -> tuple[int, int, int]:
    """The epochs: schedule, lookahead, whitening-bias freeze, a cheap test check after each epoch."""
    opt = make_optimizer(model, rc)
    per_epoch = len(train_set) // rc.batch_size
    total = max(1, math.ceil(rc.epochs * per_epoch))
    budget = cfg.max_time
    lookahead = None
    state = {"p": 0.0}

    def progress(step: int) -> float:
        p = step / total
        if budget:
            p = max(p, (time.monotonic() - t0) / budget)
        state["p"] = p
        return p

    def on_step(step: int, loss) -> bool:
        nonlocal lookahead
        if loss is not None:
            check_finite(loss, step)
            report.info(f"step {step}/{total} loss {loss:.4f} {time.monotonic() - t0:.0f}s")
        if rc.lookahead and step >= rc.lookahead_start_epochs * per_epoch and step % rc.lookahead_every == 0:
            if lookahead is None:
                lookahead = Lookahead(model)
            else:
                lookahead.update(model, lookahead.decay(progress(step), rc))
        return stop.poll(step) or progress(step) >= 1.0

    augment = partial(flip_translate, flip=rc.flip, pad=rc.translate)
    step = epoch = seen = 0
    check = test.subset(slice(None, None, 5))  # a fifth, strided (files may be sorted by class)
    while state["p"] < 1.0 and step < total:
        if rc.whiten_freeze:
            model.net.whiten.bias.requires_grad_(epoch < rc.whiten_bias_epochs)
        res = train_epoch(model, train_set.images, train_set.labels, opt, rt, batch_size=rc.batch_size,
                          generator=gen, augment=augment, lr_at=lambda s: lr_factor(progress(s), rc), step=step,
                          label_smoothing=rc.label_smoothing, log_every=10, on_step=on_step,
                          channels_last=rc.channels_last)
        step, epoch, seen = step + res.steps, epoch + 1, seen + res.images
        if lookahead is not None:
            lookahead.update(model, 1.0)  # copy the average back at the end of each epoch
        if stop.requested:
            raise Interrupted(f"interrupted in epoch {epoch}; classifier-train has no --resume: run it again")
        logits = predict(model, check.images, rt, 500, 0, rc.channels_last)
        acc = float((logits.argmax(1) == check.labels).float().mean())
        report.metrics("epoch", epoch=epoch, step=step, loss=round(res.loss, 4), train_acc=round(res.accuracy, 4),
                       test_acc_no_tta=round(acc, 4), images_per_s=round(res.images / res.seconds, 1),
                       seconds=round(time.monotonic() - t0))
    return step, epoch, seen


def _save(model: Classifier, cfg: TrainConfig, rc: RecipeConfig, metrics: dict, run: dict) -> Path:
    data = f"{DATASETS.get(cfg.dataset, cfg.dataset)} ({Path(cfg.data).name if cfg.data else 'torchvision'})"
    recipe = {"preset": cfg.preset, "disable": cfg.disable or "", **asdict(rc), **run}
    out = Path(cfg.out) / MODEL
    return save_classifier(out, model, arch=ARCH, arch_kwargs={}, classes=model.classes, input_size=model.input_size,
                           mean=model.mean, std=model.std, metrics=metrics, recipe=recipe,
                           training={"data": data, "train_images": run["images_seen"] // max(run["epochs"], 1)},
                           headline=f"test accuracy {100 * metrics['test_accuracy']:.2f}% (TTA level {rc.tta})",
                           dtype=torch.float16 if cfg.save_dtype == "fp16" else None)
