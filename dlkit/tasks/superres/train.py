"""Training SRResNet (pixel loss) and SRGAN (content + adversarial loss): Adam, warmup + cosine, resume, DDP.

Each rank draws its own patches from a generator seeded by (seed, rank, step), so DDP shards the data and a
resumed run draws exactly the batches an uninterrupted one would. Validation is PSNR (Y, ``scale`` px shaved)
on held-out images, measured by rank 0; the best SRResNet (the latest SRGAN) goes to OUT/model.safetensors.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dlkit.core.modelfile import save_model
from dlkit.core.state import save_state, state_path
from dlkit.core.errors import UsageError
from dlkit.core.interrupt import StopSignal
from dlkit.core.optim import check_finite, optimizer_step, set_lr, warmup_cosine
from dlkit.core.report import Reporter
from dlkit.core.runtime import Runtime, num_params, rng_state, set_rng_state, unwrap
from dlkit.core.training import resume_state, save_and_interrupt, stop_reason
from dlkit.tasks.superres.data import Pair, PatchSampler, make_pairs, read_hr_images
from dlkit.tasks.superres.losses import ContentLoss, make_content_loss
from dlkit.tasks.superres.model import PRESETS, SCALES, Discriminator, SRConfig, build_model, config_from_dict
from dlkit.tasks.superres.protocol import psnr, rgb_to_y, shave

TASK = "superres"
MODEL_FILE = "model.safetensors"
ARCHS = ("srresnet", "srgan")
SHAPE_KEYS = ("arch", "preset", "scale", "n_blocks", "channels", "bn", "init")  # --resume must keep these


@dataclass
class TrainConfig:
    data: str
    out: str = "runs/superres"
    arch: str = "srresnet"  # srresnet (pixel loss) | srgan (content + adversarial)
    preset: str = "srresnet"
    scale: int = 4
    n_blocks: int | None = None
    channels: int | None = None
    bn: bool | None = None
    patch: int = 24  # LR patch side; HR patch = patch * scale (the paper's 96x96 at x4)
    batch_size: int = 16  # per process
    steps: int = 2000
    lr: float = 2e-4
    min_lr: float = 1e-6
    warmup: int = 50
    loss: str = "l1"  # pixel loss: l1 | mse
    clip: float = 0.0
    val: str | None = None  # folder or tar of held-out HR images
    val_split: int = 0  # or: hold out the last N images of --data
    eval_every: int = 250
    log_every: int = 10  # losses are synchronised (.item()), reported and checked for NaN every N steps
    max_time: float | None = None  # seconds of this run (a resumed run gets the full budget again)
    init: str | None = None  # start the generator from this model (SRGAN fine-tunes SRResNet)
    content: str = "auto"  # srgan content loss: auto | vgg | l1 | mse
    vgg_weights: str | None = None
    adv_weight: float = 1e-3  # Ledig et al.: 1e-3 * adversarial + content
    d_lr: float | None = None
    seed: int = 0
    save_dtype: str = "fp32"
    resume: bool = False
    max_pixels: int | None = 64_000_000  # training images larger than this are skipped before decoding


@dataclass
class TrainResult:
    model_path: str
    steps: int
    best_val_psnr: float | None
    last_loss: float
    seconds: float
    history: list = field(default_factory=list)


def model_config(cfg: TrainConfig, init_meta: dict | None) -> SRConfig:
    if init_meta is not None:
        mcfg = config_from_dict(init_meta["config"])
        if mcfg.scale != cfg.scale:
            raise UsageError(f"--init model is x{mcfg.scale}; this run is --scale {cfg.scale}")
        return mcfg
    if cfg.preset not in PRESETS:
        raise UsageError(f"--preset {cfg.preset}: expected one of {', '.join(PRESETS)}")
    if cfg.scale not in SCALES:
        raise UsageError(f"--scale {cfg.scale}: expected one of {', '.join(map(str, SCALES))}")
    base = asdict(PRESETS[cfg.preset])
    over = {"n_blocks": cfg.n_blocks, "channels": cfg.channels, "bn": cfg.bn}
    base.update({k: v for k, v in over.items() if v is not None}, scale=cfg.scale)
    return config_from_dict(base)


def load_data(cfg: TrainConfig, report: Reporter) -> tuple[list[Pair], list[Pair]]:
    images, _ = read_hr_images(cfg.data, report, min_size=cfg.patch * cfg.scale, max_pixels=cfg.max_pixels)
    val_images: list = []
    if cfg.val:
        val_images, _ = read_hr_images(cfg.val, report, min_size=cfg.scale, max_pixels=cfg.max_pixels)
    elif cfg.val_split:
        if cfg.val_split >= len(images):
            raise UsageError(f"--val-split {cfg.val_split} leaves no training images (of {len(images)})")
        images, val_images = images[: -cfg.val_split], images[-cfg.val_split :]
    return make_pairs(images, cfg.scale), make_pairs(val_images, cfg.scale)


@torch.no_grad()
def validate(model: torch.nn.Module, pairs: list[Pair], scale: int, device) -> float:
    """Mean PSNR (Y, BT.601, ``scale`` px shaved) of the quantised output over ``pairs``."""
    from dlkit.tasks.superres.data import to_tensor, to_uint8

    was_training = model.training
    model.eval()
    scores = []
    for p in pairs:
        sr = to_uint8(model(to_tensor(p.lr).to(device)))
        scores.append(psnr(shave(rgb_to_y(sr), scale), shave(rgb_to_y(p.hr), scale)))
    model.train(was_training)
    return float(np.mean(scores))


def pixel_loss(kind: str):
    if kind not in ("l1", "mse"):
        raise UsageError(f"--loss {kind}: expected l1 or mse")
    return F.l1_loss if kind == "l1" else F.mse_loss


@dataclass
class Nets:
    """What :func:`build` makes: networks (wrapped for DDP), optimizers, content loss and data."""

    gen: torch.nn.Module
    disc: torch.nn.Module | None
    content: ContentLoss | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    mcfg: SRConfig
    train_pairs: list[Pair]
    val_pairs: list[Pair]
    init_meta: dict | None

    @property
    def gan(self) -> bool:
        return self.disc is not None


def build(cfg: TrainConfig, rt: Runtime, report: Reporter, state: dict | None) -> Nets:
    """Generator (from --init or fresh), discriminator and content loss for srgan, optimizers; restored from
    ``state`` when resuming (weights before the DDP wrap, optimizers and RNG after it)."""
    init_gen, init_meta = (None, None)
    if cfg.init:
        from dlkit.tasks.superres.infer import load_model

        init_gen, init_meta = load_model(cfg.init)  # config checked against the stored tensors
    mcfg = model_config(cfg, init_meta)
    train_pairs, val_pairs = load_data(cfg, report)
    gen = init_gen.train() if init_gen is not None else build_model(mcfg)
    gan = cfg.arch == "srgan"
    disc = Discriminator() if gan else None
    content = make_content_loss(cfg.content, cfg.vgg_weights, rt.device, report) if gan else None
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr or cfg.lr, betas=(0.9, 0.999)) if gan else None
    if state is not None:
        gen.load_state_dict(state["model"])
        if gan:
            disc.load_state_dict(state["disc"])
    gen = rt.wrap(gen)
    disc = rt.wrap(disc) if gan else None
    if state is not None:
        opt_g.load_state_dict(state["optimizer"])
        if gan:
            opt_d.load_state_dict(state["opt_d"])
        set_rng_state(state["rng"], rt.rank)
    return Nets(gen, disc, content, opt_g, opt_d, mcfg, train_pairs, val_pairs, init_meta)


class _Run:
    """One training run's networks, progress and bookkeeping: saving, validation and single steps."""

    def __init__(self, cfg: TrainConfig, rt: Runtime, report: Reporter, state: dict | None):
        self.cfg, self.rt, self.report = cfg, rt, report
        self.model_path = Path(cfg.out) / MODEL_FILE
        self.state_file = state_path(self.model_path)
        self.nets = build(cfg, rt, report, state)
        self.sampler = PatchSampler(self.nets.train_pairs, cfg.scale, cfg.patch, cfg.batch_size, cfg.seed, rt.rank)
        self.start, self.best, self.elapsed, self.history = 0, -math.inf, 0.0, []
        if state is not None:
            self.start, self.best, self.elapsed = state["step"], state["best_val"], state["elapsed"]
            self.history = state["history"]
        self.loss_name = self.nets.content.name if self.nets.gan else cfg.loss
        self.pix = pixel_loss(cfg.loss)
        self.lr = cfg.lr
        self.t0 = time.monotonic()

    def seconds(self) -> float:
        return self.elapsed + time.monotonic() - self.t0

    def announce(self) -> None:
        cfg, rt, n, mcfg = self.cfg, self.rt, self.nets, self.nets.mcfg
        n_params = num_params(n.gen)
        self.report.start("superres-train", f"{cfg.arch} x{mcfg.scale}, {mcfg.n_blocks} blocks x {mcfg.channels} ch"
                          f"{' + BN' if mcfg.bn else ' (no BN)'}, {n_params / 1e6:.2f}M parameters; "
                          f"{len(n.train_pairs)} train / {len(n.val_pairs)} val images", rt, self.start, task=TASK,
                          arch=cfg.arch, params=n_params, steps=cfg.steps, content_loss=self.loss_name)
        if n.gan:
            self.report.info(f"superres-train: content loss {n.content.name}, adversarial weight {cfg.adv_weight}")

    def save(self, step: int, val: float | None, write_model: bool) -> None:
        """The state (and the model with ``write_model``), written by rank 0; called on every rank."""
        rng = rng_state(self.rt)  # every rank's (a collective)
        if not self.rt.is_main:
            return
        cfg, n = self.cfg, self.nets
        if write_model:
            meta = model_meta(cfg, n.mcfg, step, val, self.seconds(), len(n.train_pairs), len(n.val_pairs),
                              self.loss_name, n.init_meta)
            save_model(self.model_path, unwrap(n.gen).state_dict(), meta,
                            dtype=cfg.save_dtype)
        st = {"model": unwrap(n.gen).state_dict(), "optimizer": n.opt_g.state_dict(), "step": step,
              "best_val": self.best, "elapsed": self.seconds(), "history": self.history, "rng": rng,
              "config": _plain(asdict(cfg))}
        if n.gan:
            st.update(disc=unwrap(n.disc).state_dict(), opt_d=n.opt_d.state_dict())
        save_state(self.state_file, st, task=TASK)

    def evaluate(self, step: int, final: bool = False) -> None:
        n = self.nets
        val = validate(unwrap(n.gen), n.val_pairs, self.cfg.scale, self.rt.device) \
            if (self.rt.is_main and n.val_pairs) else None
        self.rt.barrier()
        if val is None:
            self.save(step, None, write_model=final)
            return
        self.history.append({"step": step, "val_psnr": round(val, 3)})
        # SRResNet keeps its best PSNR; SRGAN keeps its latest generator, since choosing a GAN by PSNR
        # would pick the least adversarial one (Ledig et al. train for a fixed number of updates).
        improved = val > self.best or n.gan or final and not self.model_path.exists()
        self.best = max(self.best, val)
        self.report.metrics("eval", step=step, val_psnr=round(val, 3), best_val_psnr=round(self.best, 3))
        self.save(step, val, write_model=improved)

    def step(self, step: int) -> dict[str, torch.Tensor]:
        """One optimizer step (both networks for srgan) at ``step``; returns the losses as detached tensors
        (synchronised with ``.item()`` only at the logging interval)."""
        cfg, rt, n = self.cfg, self.rt, self.nets
        lr = warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr)
        set_lr(n.opt_g, lr)
        lr_img, hr_img = (t.to(rt.device, non_blocking=True) for t in self.sampler.batch(step))
        if n.gan:
            set_lr(n.opt_d, lr * (cfg.d_lr or cfg.lr) / cfg.lr)
            fields = gan_step(n.gen, n.disc, n.content, n.opt_g, n.opt_d, lr_img, hr_img, cfg, rt)
        else:
            with rt.autocast():
                sr = n.gen(lr_img)  # (B, 3, pS, pS)
                loss = self.pix(sr.float(), hr_img)
            optimizer_step(loss, n.opt_g, rt.scaler, clip=cfg.clip)
            fields = {"loss": loss.detach()}
        self.lr = lr
        return fields

    def log(self, step: int, fields: dict[str, torch.Tensor]) -> dict[str, float]:
        """At the logging interval: synchronise the losses (averaged over ranks, so that all of them stop
        together on NaN/inf), report them."""
        values = {k: self.rt.all_reduce_mean(float(v.item())) for k, v in fields.items()}
        keep = str(self.model_path) if self.model_path.exists() else None
        check_finite(values["loss"], step, keep=keep)
        self.report.event("step", step=step, lr=self.lr, **values)
        return values


def train(cfg: TrainConfig, rt: Runtime, report: Reporter, stop: StopSignal | None = None) -> TrainResult:
    """Train a generator (and, for ``srgan``, a discriminator); returns where the best model went."""
    stop = stop or StopSignal()
    if cfg.arch not in ARCHS:
        raise UsageError(f"--arch {cfg.arch}: expected one of {', '.join(ARCHS)} (bicubic needs no training)")
    state = None
    if cfg.resume:
        state = resume_state(state_path(Path(cfg.out) / MODEL_FILE), TASK, required=("model", "optimizer", "step", "rng"),
                             config=_plain(asdict(cfg)), shape_keys=SHAPE_KEYS)
    run = _Run(cfg, rt, report, state)
    run.announce()
    loss_val, step, reason = float("nan"), run.start, None
    run.nets.gen.train()
    t_run = time.monotonic()  # --max-time counts this run only
    with report.progress(cfg.steps, "superres-train", start=run.start) as update:
        while step < cfg.steps and reason is None:
            if step % cfg.eval_every == 0 and step > run.start:
                run.evaluate(step)
            fields = run.step(step)
            step += 1
            reason = stop_reason(stop, rt, t0=t_run, max_time_s=cfg.max_time, step=step, max_steps=cfg.steps)
            if step % cfg.log_every == 0 or reason:
                values = run.log(step, fields)
                loss_val = values["loss"]
                update(1, **{k: round(v, 5) for k, v in values.items()})
            else:
                update(1)
    if reason == "interrupted":
        save_and_interrupt(rt, lambda: run.save(step, None, write_model=False), f"at step {step}", run.state_file)
    if reason == "max-time":
        report.info(f"--max-time reached after step {step}")
    if step > run.start or not run.model_path.exists():
        run.evaluate(step, final=True)
    best = run.best if run.best > -math.inf else None
    return TrainResult(str(run.model_path), step, best, loss_val, run.seconds(), run.history)


def gan_step(gen, disc, content, opt_g, opt_d, lr_img, hr_img, cfg: TrainConfig, rt: Runtime) -> dict[str, torch.Tensor]:
    """One SRGAN step (Ledig et al. 2017): D on real vs fake, then G on content + adv_weight * adversarial."""
    bce = F.binary_cross_entropy_with_logits
    with rt.autocast():
        sr = gen(lr_img)  # (B, 3, H, W)
        d_real, d_fake = disc(hr_img), disc(sr.detach())
        loss_d = bce(d_real.float(), torch.ones_like(d_real.float())) + bce(d_fake.float(), torch.zeros_like(d_fake.float()))
    # two optimizers, one loss scaler: step each without updating the scale, then update it once per
    # iteration (PyTorch's multi-optimizer AMP recipe), so an inf in either network's grads is seen by the update
    optimizer_step(loss_d, opt_d, rt.scaler, clip=cfg.clip, update_scaler=False)
    for p in disc.parameters():
        p.requires_grad_(False)
    with rt.autocast():
        g_fake = disc(sr).float()
        loss_content = content(sr.float().clamp(0, 1), hr_img)
        loss_adv = bce(g_fake, torch.ones_like(g_fake))
        loss_g = loss_content + cfg.adv_weight * loss_adv
    optimizer_step(loss_g, opt_g, rt.scaler, clip=cfg.clip, update_scaler=False)
    rt.scaler.update()
    for p in disc.parameters():
        p.requires_grad_(True)
    return {"loss": loss_g.detach(), "content": loss_content.detach(), "adv": loss_adv.detach(), "loss_d": loss_d.detach()}


def model_meta(cfg: TrainConfig, mcfg: SRConfig, step: int, val: float | None, seconds: float, n_train: int,
               n_val: int, loss_name: str, init_meta: dict | None) -> dict:
    metrics = {"val_psnr_y": round(val, 3), "val_images": n_val} if val is not None else {}
    headline = f"val {val:.2f} dB (Y, x{mcfg.scale}, {n_val} held-out images)" if val is not None else f"x{mcfg.scale}, step {step}"
    training = {"data": Path(cfg.data).name, "train_images": n_train, "steps": step, "seconds": round(seconds, 1),
                "loss": loss_name, "recipe": _plain(asdict(cfg))}
    if init_meta is not None:
        training["init"] = {"arch": init_meta.get("arch"), "headline": init_meta.get("headline")}
    return {
        "task": TASK,
        "arch": cfg.arch,
        "config": _plain(asdict(mcfg)),
        "scale": mcfg.scale,
        "normalisation": "RGB in [0, 1] in and out; output clamped and rounded to uint8",
        "training": training,
        "metrics": metrics,
        "headline": headline,
    }


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
