"""``adv-train``: adversarial training on the shared classification loop, written as a ``classifier`` file.

Methods (each batch is replaced by the attack's output before the forward pass, through the loop's
``perturb`` hook; the attack runs on the model in eval mode, as TRADES' and Wong et al.'s releases do for BN):

- ``pgd`` (Madry et al. 2018): PGD with a uniform random start in the eps box. Their MNIST setting is
  eps 0.3, 40 steps of 0.01; CIFAR-10 eps 8/255, 7 steps of 2/255.
- ``fgsm-rs`` (Wong, Rice & Kolter 2020, "Fast is better than free"): one FGSM step of 1.25 eps from a
  uniform random start, projected back to the eps box, with a cyclic learning rate.
- ``fgsm``: plain FGSM training (Goodfellow et al. 2014), no random start: the run that overfits
  catastrophically, kept for the lecture and the tests.
- ``none``: the same recipe without an attack (the standard model of the side-by-side table).

Catastrophic overfitting (Wong et al. 2020, Sec. 5): after each epoch, accuracy under PGD and under FGSM
on a fixed training batch. When PGD accuracy falls by more than ``overfit_drop`` below that of the last good
epoch while FGSM accuracy climbs (or holds), training stops and the weights of the last good epoch are kept.
A good epoch is one whose PGD accuracy beats a constant prediction (the batch's largest class) by 5 points.

State for ``--resume`` (``OUT/state.pt``) is written after every epoch; a resumed run equals an
uninterrupted one on the CPU.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from dlkit.core.interrupt import StopSignal
from dlkit.core.optim import check_finite
from dlkit.core.report import Reporter
from dlkit.core.runtime import Runtime, rng_state, set_rng_state, unwrap
from dlkit.core.state import save_state
from dlkit.core.training import resume_state, save_and_interrupt, stop_reason
from dlkit.tasks.adversarial.recipe import METHODS, AdvTrainConfig, resolve
from dlkit.vision.attacks import fgsm, pgd, project_linf
from dlkit.vision.classifier import Classifier, evaluate, flip_translate, save_classifier, to_float, train_epoch

TASK = "adv-train"
STATE = "state.pt"
MODEL = "model.safetensors"
SHAPE_KEYS = ("dataset", "arch", "width", "subset", "seed", "batch_size", "method")
_REQUIRED = ("config", "model", "optimizer", "generator", "rng", "epoch", "step", "history", "seconds", "good")


@dataclass
class EpochCheck:
    """Accuracy on the fixed training batch after an epoch (the catastrophic-overfitting monitor)."""

    epoch: int
    loss: float
    clean: float
    fgsm: float
    pgd: float
    seconds: float


@dataclass
class AdvTrainResult:
    model: str
    method: str
    epochs: int
    steps: int
    test_accuracy: float
    pgd_accuracy: float | None  # on the first cfg.eval_n test images, PGD-cfg.eval_steps at eps
    eps: float
    seconds: float
    history: list[EpochCheck] = field(default_factory=list)
    stopped: Optional[str] = None  # "max-time" | "overfit" | None
    kept_epoch: Optional[int] = None  # the epoch whose weights the file holds


# ---------------------------------------------------------------- the attack inside the loop
def make_perturb(cfg: AdvTrainConfig, rt: Runtime, eps_at):
    """``perturb(model, x, y) -> x_adv`` for the loop; ``eps_at()`` gives the current eps (warm-up)."""
    if cfg.method == "none":
        return None

    def perturb(model, x, y):
        net = unwrap(model)
        eps = eps_at()
        with rt.autocast():
            if cfg.method == "pgd":
                return pgd(net, x, y, eps, steps=cfg.steps, step_size=cfg.step_size * eps / cfg.eps)
            if cfg.method == "fgsm-rs":
                start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp_(0, 1)
                adv = fgsm(net, start, y, cfg.step_size * eps / cfg.eps)
                return project_linf(adv, x, eps)
            adv = fgsm(net, x, y, cfg.step_size * eps / cfg.eps)  # "fgsm": no random start
            return project_linf(adv, x, eps)
    return perturb


def check_batch(model: Classifier, x: torch.Tensor, y: torch.Tensor, cfg: AdvTrainConfig, rt: Runtime):
    """(clean, FGSM, PGD) accuracy on the fixed batch, in eval mode: PGD-10 with a random start, step 2.5 eps / 10."""
    def acc(inp):
        with torch.no_grad():
            return float((model(inp).argmax(1) == y).float().mean())

    was_training = model.training
    model.eval()
    adv_f = fgsm(model, x, y, cfg.eps)
    adv_p = pgd(model, x, y, cfg.eps, steps=10)
    accs = (acc(x), acc(adv_f), acc(adv_p))
    model.train(was_training)
    return tuple(rt.all_reduce_mean(a) for a in accs)


def collapsed(history: list[EpochCheck], good: EpochCheck | None, drop: float) -> bool:
    """Wong et al.'s signature of catastrophic overfitting: PGD accuracy on the training batch falls by more
    than ``drop`` below the last good epoch's while FGSM accuracy does not fall (it climbs, or stays at 100%):
    a model that got worse at everything has diverged, not overfitted to the single-step attack."""
    if good is None or not history:
        return False
    now = history[-1]
    return now.pgd < good.pgd - drop and now.fgsm >= good.fgsm


# ---------------------------------------------------------------- the run
@dataclass
class _Run:
    """What the loop carries: the model and its optimiser, the data order, progress ``s`` (saved as the state)
    and the weights of the last good epoch."""

    cfg: AdvTrainConfig
    rt: Runtime
    report: Reporter
    model: Classifier
    opt: torch.optim.Optimizer
    gen: torch.Generator
    s: dict
    good_weights: dict | None = None

    def save(self) -> None:
        if self.rt.is_main:
            save_state(Path(self.cfg.out) / STATE, {
                "config": asdict(self.cfg), "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(), "rng": rng_state(), **self.s, "good_model": self.good_weights},
                task=TASK)


def adv_train(cfg: AdvTrainConfig, rt: Runtime, report: Reporter, stop: StopSignal | None = None) -> AdvTrainResult:
    """Train a classifier with ``cfg.method``; writes OUT/model.safetensors and returns the result."""
    from dlkit.tasks.adversarial.data import training_data

    stop = stop or StopSignal()
    train, test = training_data(cfg, report)
    cfg = resolve(cfg, channels=train.shape[0])
    run = _start(cfg, rt, report, train)
    s, out = run.s, Path(cfg.out)
    steps_per_epoch = max(1, len(train) // rt.world_size // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    xc, yc = _fixed_batch(train, cfg, rt)
    report.info(f"adv-train {cfg.method} on {len(train)} images {tuple(train.shape)}: eps {cfg.eps:.4g}, "
                f"{cfg.steps} step(s) of {cfg.step_size:.4g}, {cfg.epochs} epochs x {steps_per_epoch} steps, "
                f"{cfg.optimizer} lr {cfg.lr:g} (cyclic), {cfg.arch}" + (f" width {cfg.width}" if cfg.width else ""))
    t_start, stopped, why = time.monotonic(), None, {"reason": None}

    def on_step(step: int, loss: float | None) -> bool:
        s["step"] = step
        if loss is not None:
            check_finite(loss, step, keep=str(out / STATE))
        why["reason"] = stop_reason(stop, rt, t0=t_start, max_time_s=cfg.max_time, step=step)
        return why["reason"] is not None

    def eps_now() -> float:  # the warm-up: eps rises linearly over the first eps_warmup epochs
        ramp = cfg.eps_warmup * steps_per_epoch
        return cfg.eps * min(1.0, (s["step"] + 1) / ramp) if ramp else cfg.eps

    perturb = make_perturb(cfg, rt, eps_now)
    augment = (lambda x, g: flip_translate(x, g, flip=cfg.flip, pad=cfg.pad)) if (cfg.flip or cfg.pad) else None
    net = rt.wrap(run.model)
    with report.progress(cfg.epochs, f"adv-train {cfg.method}", start=s["epoch"]) as update:
        while s["epoch"] < cfg.epochs:
            res = train_epoch(net, train.images, train.labels, run.opt, rt, batch_size=cfg.batch_size,
                              generator=run.gen, augment=augment, perturb=perturb, step=s["step"], on_step=on_step,
                              log_every=max(1, steps_per_epoch // 4), lr_at=lambda i: cyclic_lr(i, total, cfg.lr))
            if why["reason"] == "interrupted":  # the state of the last finished epoch is on disk already
                save_and_interrupt(rt, lambda: None, f"in epoch {s['epoch'] + 1} (resumes at its start)", out / STATE)
            if why["reason"] == "max-time":
                stopped = "max-time"
                report.warn(f"--max-time reached in epoch {s['epoch'] + 1}; the model holds the weights so far, "
                            f"continue with --resume (from epoch {s['epoch']})")
                break
            check_finite(res.loss, s["step"], keep=str(out / STATE))
            stopped = _end_epoch(run, res, xc, yc, update)
            if stopped:
                break
            run.save()
    return _finish(cfg, rt, report, run.model, test, s, stopped)


def _start(cfg: AdvTrainConfig, rt: Runtime, report: Reporter, train) -> _Run:
    """A fresh run (its state saved at once, so a stop in epoch 1 can resume), or the saved one with --resume."""
    out = Path(cfg.out)
    state = resume_state(out / STATE, TASK, required=_REQUIRED, config=asdict(cfg),
                         shape_keys=SHAPE_KEYS) if cfg.resume else None
    model = _build(cfg, train)
    run = _Run(cfg, rt, report, model, _optimizer(model, cfg), torch.Generator().manual_seed(cfg.seed + 7919),
               {"epoch": 0, "step": 0, "history": [], "seconds": 0.0, "good": None})
    if state is None:
        if cfg.init:
            _load_init(model, cfg)
        run.save()
        return run
    model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.gen.set_state(state["generator"])
    set_rng_state(state["rng"])
    run.s = {k: state[k] for k in run.s}
    run.good_weights = state.get("good_model")
    report.info(f"resuming at epoch {run.s['epoch']} of {cfg.epochs}")
    return run


def _end_epoch(run: _Run, res, xc, yc, update) -> str | None:
    """The monitor after an epoch: record, report, and stop ("overfit") on catastrophic overfitting, restoring
    the last good epoch's weights. A good epoch's PGD accuracy beats a constant prediction by 5 points."""
    cfg, rt, s = run.cfg, run.rt, run.s
    s["epoch"] += 1
    s["seconds"] += res.seconds
    check = EpochCheck(s["epoch"], rt.all_reduce_mean(res.loss), *check_batch(run.model, xc, yc, cfg, rt),
                       round(res.seconds, 1))
    s["history"].append(asdict(check))
    update(1, loss=check.loss, clean=check.clean, fgsm=check.fgsm, pgd=check.pgd)
    run.report.event("epoch", **asdict(check))
    if cfg.method == "none" or not cfg.overfit_check:
        return None
    good = EpochCheck(**s["good"]) if s["good"] else None
    if collapsed([check], good, cfg.overfit_drop):
        run.report.warn(f"catastrophic overfitting in epoch {check.epoch}: PGD accuracy on a training batch fell "
                        f"from {good.pgd:.1%} to {check.pgd:.1%} while FGSM accuracy climbed to {check.fgsm:.1%}; "
                        f"stopping and keeping epoch {good.epoch}")
        run.model.load_state_dict(run.good_weights)
        return "overfit"
    chance = float(torch.bincount(yc).max()) / len(yc)  # a constant prediction's accuracy
    if check.pgd > chance + 0.05 and (good is None or check.pgd >= good.pgd - cfg.overfit_drop):
        s["good"], run.good_weights = asdict(check), copy.deepcopy(run.model.state_dict())
    return None


def cyclic_lr(step: int, total: int, peak: float, up: float = 0.4) -> float:
    """Wong et al. 2020's cyclic schedule: linear 0 -> ``peak`` over the first ``up`` of training, then to 0."""
    p = step / max(1, total)
    return peak * (p / up if p < up else max(0.0, (1 - p) / (1 - up)))


def _build(cfg: AdvTrainConfig, train) -> Classifier:
    from dlkit.nets.classifiers import build_classifier

    c, h, _ = train.shape
    kwargs = {"width": cfg.width} if cfg.width and cfg.arch in ("mnist-cnn", "cnn-small") else {}
    net = build_classifier(cfg.arch, c, len(train.classes), h, **dict(kwargs))
    return Classifier(net, arch=cfg.arch, classes=train.classes, input_size=train.shape, mean=cfg.mean, std=cfg.std,
                      arch_kwargs=kwargs)


def _load_init(model: Classifier, cfg: AdvTrainConfig) -> None:
    """``--init``: start from the weights of a classifier file of the same network (e.g. fine-tune a fast FGSM
    model with PGD); the optimiser, the schedule and the data order start afresh."""
    from dlkit.core.errors import UsageError
    from dlkit.vision.classifier import load_classifier

    src = load_classifier(cfg.init)
    if src.arch != model.arch or src.arch_kwargs != model.arch_kwargs or src.input_size != model.input_size \
            or list(src.classes) != list(model.classes):
        raise UsageError(f"--init {cfg.init}: a {src.arch} {src.arch_kwargs or ''} for {len(src.classes)} classes of "
                         f"{tuple(src.input_size)}; this run trains a {model.arch} {model.arch_kwargs or ''} for "
                         f"{len(model.classes)} classes of {tuple(model.input_size)} (match --arch and --width)")
    model.load_state_dict(src.state_dict())


def _optimizer(model: Classifier, cfg: AdvTrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.9, or Adam; weight decay on weights only (not biases or BatchNorm)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)


def _fixed_batch(train, cfg: AdvTrainConfig, rt: Runtime):
    """The monitor's batch: ``cfg.check_n`` training images drawn once with the seed (the same on every rank)."""
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed + 17))[:cfg.check_n]
    return to_float(train.images[idx]).to(rt.device), train.labels[idx].to(rt.device)


def _finish(cfg, rt, report, model, test, s, stopped) -> AdvTrainResult:
    """Test accuracy, clean and under PGD on the first ``eval_n`` test images; the model file."""
    _, acc = evaluate(model, test.images, test.labels, rt)
    model.eval()
    robust = None
    if cfg.eval_n:
        x, y = to_float(test.images[:cfg.eval_n]).to(rt.device), test.labels[:cfg.eval_n].to(rt.device)
        adv = torch.cat([pgd(model, x[i:i + 500], y[i:i + 500], cfg.eps, steps=cfg.eval_steps)
                         for i in range(0, len(y), 500)])
        with torch.no_grad():
            robust = float((model(adv).argmax(1) == y).float().mean())
    kept = s["good"]["epoch"] if stopped == "overfit" and s["good"] else s["epoch"]
    history = [EpochCheck(**h) for h in s["history"]]
    result = AdvTrainResult(str(Path(cfg.out) / MODEL), cfg.method, s["epoch"], s["step"], acc, robust, cfg.eps,
                            round(s["seconds"], 1), history, stopped, kept)
    if rt.is_main:
        _save_model(cfg, model, result)
    return result


def _save_model(cfg: AdvTrainConfig, model: Classifier, r: AdvTrainResult) -> None:
    dtype = cfg.save_dtype
    recipe = {k: v for k, v in asdict(cfg).items() if k not in ("out", "resume", "data", "max_time")}
    metrics = {"test_accuracy": r.test_accuracy, "epochs": r.epochs, "steps": r.steps, "kept_epoch": r.kept_epoch,
               "stopped": r.stopped, "seconds": r.seconds}
    if r.pgd_accuracy is not None:
        metrics["pgd"] = {"eps": cfg.eps, "steps": cfg.eval_steps, "n": cfg.eval_n, "accuracy": r.pgd_accuracy}
    headline = f"{cfg.method} (eps {cfg.eps:.4g}): clean {100 * r.test_accuracy:.2f}%" + (
        f", PGD-{cfg.eval_steps} {100 * r.pgd_accuracy:.2f}% (first {cfg.eval_n} test images)"
        if r.pgd_accuracy is not None else "")
    save_classifier(Path(cfg.out) / MODEL, model, arch=model.arch, arch_kwargs=model.arch_kwargs, classes=model.classes,
                    input_size=model.input_size, mean=model.mean, std=model.std, metrics=metrics,
                    recipe={"command": "adv-train", **recipe}, training={"data": cfg.dataset, "method": cfg.method},
                    headline=headline, dtype=dtype)
