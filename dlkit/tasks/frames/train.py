"""Training a frame predictor on Moving MNIST: pixel loss (mse, l1) or adversarial (Mathieu et al. 2016).

Each step draws a fresh batch of sequences from MNIST train digits, seeded by (seed, step, rank) (data.py), so
a resumed run trains on exactly the batches an uninterrupted one would and DDP ranks train on different ones.
Adam with linear warmup and cosine decay; gradient clipping; validation (per-frame MSE/SSIM on sequences of
training digits drawn with another seed: a measure of fit - the test set is for ``frame-predict --eval``)
every ``eval_every`` steps by rank 0, which also writes the model (the latest) and the resumable state.

Adversarial: ``d_steps`` discriminator updates (the first on this step's batch, the others on extra batches
drawn with the same (seed, step, rank) generator), then one generator update on
``recon + gdl_weight * GDL + adv_weight * L_adv``; one GradScaler for both optimizers, updated once per
iteration (core/optim.py's multi-optimizer recipe).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dlkit.core.errors import UsageError
from dlkit.core.interrupt import StopSignal
from dlkit.core.modelfile import save_model
from dlkit.core.optim import check_finite, optimizer_step, set_lr, warmup_cosine
from dlkit.core.report import Reporter
from dlkit.core.runtime import Runtime, rng_state, set_rng_state, unwrap
from dlkit.core.rundir import clear_snapshots, write_snapshot
from dlkit.core.state import save_state, state_path
from dlkit.core.training import resume_state, save_and_interrupt, stop_reason
from dlkit.nets.gan_losses import d_loss, g_loss
from dlkit.tasks.frames.data import T_IN, VAL_SEED, fixed_sequences, read_digits, train_batch
from dlkit.tasks.frames.losses import GAMES, LOSSES, gradient_difference, reconstruction
from dlkit.tasks.frames.metrics import Scores, copy_last
from dlkit.tasks.frames.model import PRESETS, ClipDiscriminator, FramesConfig, build_model, preset

TASK = "frames"
MODEL_FILE = "model.safetensors"
SHAPE_KEYS = ("preset", "width", "depth", "kernel", "loss", "d_width", "init")


@dataclass
class TrainConfig:
    data: str  # mnist.npz (train digits)
    out: str = "runs/frames"
    preset: str = "simvp-cpu"
    width: int | None = None  # overrides of the preset
    depth: int | None = None
    kernel: int | None = None
    loss: str = "mse"  # mse | l1 | adversarial
    recon: str = "mse"  # adversarial: its reconstruction term
    game: str = "non-saturating"  # adversarial: non-saturating | hinge
    gdl_weight: float = 1.0  # Mathieu et al.: lambda_gdl 1
    adv_weight: float = 0.01  # Mathieu et al.: lambda_adv 0.05 (with their multi-scale D)
    d_steps: int = 1
    d_width: int = 32
    d_lr: float | None = None
    batch_size: int = 16  # per process
    steps: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup: int = 100
    clip: float = 1.0
    val_size: int = 200
    eval_every: int = 500
    log_every: int = 20
    snapshot_every: int | None = None  # steps between copies of the model in OUT/snapshots/ (None: none)
    max_time: float | None = None  # seconds of this run
    init: str | None = None  # start the predictor from this frames model (e.g. adversarial from an mse model)
    seed: int = 0
    save_dtype: str = "fp32"
    resume: bool = False

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise UsageError(f"--loss {self.loss}: expected one of {', '.join(LOSSES)}")
        if self.recon not in ("mse", "l1"):
            raise UsageError(f"--recon {self.recon}: expected mse or l1")
        if self.game not in GAMES:
            raise UsageError(f"--game {self.game}: expected one of {', '.join(GAMES)}")
        if self.preset not in PRESETS:
            raise UsageError(f"--preset {self.preset}: expected one of {', '.join(PRESETS)}")
        if self.kernel is not None and self.kernel % 2 == 0:
            raise UsageError(f"--kernel {self.kernel}: must be odd")


@dataclass
class TrainResult:
    model_path: str
    steps: int
    seconds: float
    metrics: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)


def to_clip(video: np.ndarray, device) -> torch.Tensor:
    """uint8 (B, T, H, W) -> float (B, T, 1, H, W) in [0, 1] on ``device``."""
    return torch.from_numpy(video).to(device, non_blocking=True).unsqueeze(2).float() / 255.0


class _Run:
    """Networks, optimizers, validation data and the run folder of one training run."""

    def __init__(self, cfg: TrainConfig, rt: Runtime, report: Reporter, digits: np.ndarray, state: dict | None):
        self.cfg, self.rt, self.report, self.digits = cfg, rt, report, digits
        self.model_path = Path(cfg.out) / MODEL_FILE
        self.state_file = state_path(self.model_path)
        if rt.is_main and not cfg.resume:  # a new run: an earlier run's snapshots must not mix with this one's
            clear_snapshots(cfg.out)
        self.mcfg, gen = self._predictor()
        self.adversarial = cfg.loss == "adversarial"
        disc = ClipDiscriminator(self.mcfg.t_in + self.mcfg.t_out, self.mcfg.channels, cfg.d_width) if self.adversarial else None
        if state is not None:
            gen.load_state_dict(state["model"])
            if disc is not None:
                disc.load_state_dict(state["disc"])
        self.gen, self.disc = rt.wrap(gen), (rt.wrap(disc) if disc is not None else None)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.d_lr or cfg.lr, betas=(0.5, 0.999)) if disc else None
        self.step, self.elapsed, self.history, self.metrics, self.baseline = 0, 0.0, [], {}, {}
        if state is not None:
            self.opt_g.load_state_dict(state["opt_g"])
            if self.opt_d is not None:
                self.opt_d.load_state_dict(state["opt_d"])
            rt.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            self.step, self.elapsed, self.history = state["step"], state["elapsed"], list(state["history"])
            self.metrics = dict(state.get("metrics", {}))
        self.val = fixed_sequences(digits, 0, cfg.val_size, seed=VAL_SEED) if rt.is_main and cfg.val_size else None
        self.t0 = time.monotonic()

    def _predictor(self) -> tuple[FramesConfig, torch.nn.Module]:
        cfg = self.cfg
        if cfg.init:
            from dlkit.tasks.frames.infer import load_model

            gen, meta = load_model(cfg.init)
            self.init_meta = {"name": meta.get("name"), "headline": meta.get("headline")}
            return gen.cfg, gen.train()
        self.init_meta = None
        mcfg = preset(cfg.preset, width=cfg.width, depth=cfg.depth, kernel=cfg.kernel)
        try:
            return mcfg, build_model(mcfg)
        except ValueError as e:
            raise UsageError(f"--preset {cfg.preset}: {e}") from None

    def seconds(self) -> float:
        return self.elapsed + time.monotonic() - self.t0

    def announce(self) -> None:
        cfg, rt, m = self.cfg, self.rt, self.mcfg
        n = sum(p.numel() for p in unwrap(self.gen).parameters())
        what = f"{cfg.loss}" + (f" ({cfg.recon} + {cfg.gdl_weight} GDL + {cfg.adv_weight} {cfg.game}, k={cfg.d_steps})"
                                if self.adversarial else "")
        self.report.info(f"frame-predict-train: {m.arch} ({'--init ' + cfg.init if cfg.init else cfg.preset}), "
                         f"{n / 1e6:.2f}M parameters, loss {what}; {len(self.digits)} train digits, batch "
                         f"{cfg.batch_size}; {rt.device}, {rt.precision}" + (f", {rt.world_size} processes" if rt.distributed else "")
                         + (f"; resuming at step {self.step}" if self.step else ""))
        self.report.event("start", task=TASK, arch=m.arch, params=n, loss=cfg.loss, step=self.step, steps=cfg.steps,
                          world_size=rt.world_size, device=str(rt.device), precision=rt.precision)

    def batch(self, step: int, k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(context, future) of batch ``step`` (extra discriminator batches: ``k`` > 0)."""
        seed = self.cfg.seed if k == 0 else self.cfg.seed * 1000 + 7919 * k
        clip = to_clip(train_batch(self.digits, self.cfg.batch_size, seed, step, self.rt.rank), self.rt.device)
        return clip[:, :self.mcfg.t_in], clip[:, self.mcfg.t_in:self.mcfg.t_in + self.mcfg.t_out]

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        cfg, rt = self.cfg, self.rt
        lr = warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr)
        set_lr(self.opt_g, lr)
        ctx, fut = self.batch(step)
        if self.adversarial:
            set_lr(self.opt_d, lr * (cfg.d_lr or cfg.lr) / cfg.lr)
            return self.adversarial_step(step, ctx, fut)
        with rt.autocast():
            pred = self.gen(ctx)
        loss = reconstruction(cfg.loss, pred.float(), fut)
        optimizer_step(loss, self.opt_g, rt.scaler, clip=cfg.clip)
        return {"loss": loss.detach()}

    def adversarial_step(self, step: int, ctx: torch.Tensor, fut: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, rt = self.cfg, self.rt
        for k in range(cfg.d_steps):
            c, f = (ctx, fut) if k == 0 else self.batch(step, k)
            self.opt_d.zero_grad(set_to_none=True)  # the generator's update left gradients in D
            with rt.autocast():
                with torch.no_grad():
                    fake = self.gen(c)
                l_real = self.disc(torch.cat([c, f], 1)).float()
                l_fake = self.disc(torch.cat([c, fake.detach()], 1)).float()
            loss_d = d_loss(cfg.game, l_real, l_fake)
            optimizer_step(loss_d, self.opt_d, rt.scaler, clip=cfg.clip, update_scaler=False)
            if k < cfg.d_steps - 1:
                rt.scaler.update()  # GradScaler allows one step per optimizer between updates
        toggle = not rt.distributed  # DDP expects every D parameter to get a gradient
        if toggle:
            self.disc.requires_grad_(False)
        with rt.autocast():
            pred = self.gen(ctx)
            adv = g_loss(cfg.game, self.disc(torch.cat([ctx, pred], 1)).float())
        rec = reconstruction(cfg.recon, pred.float(), fut)
        gdl = gradient_difference(pred.float(), fut)
        loss = rec + cfg.gdl_weight * gdl + cfg.adv_weight * adv
        optimizer_step(loss, self.opt_g, rt.scaler, clip=cfg.clip, update_scaler=False)
        rt.scaler.update()
        if toggle:
            self.disc.requires_grad_(True)
        return {"loss": loss.detach(), "recon": rec.detach(), "gdl": gdl.detach(), "adv": adv.detach(),
                "loss_d": loss_d.detach()}

    def log(self, step: int, fields: dict[str, torch.Tensor]) -> dict[str, float]:
        values = {k: round(self.rt.all_reduce_mean(float(v)), 6) for k, v in fields.items()}
        check_finite(values["loss"], step, keep=str(self.model_path) if self.model_path.exists() else None)
        self.report.event("step", step=step, **values)
        return values

    @torch.no_grad()
    def validate(self) -> tuple[dict, dict]:
        """(model, copy-last baseline) mean metrics on the validation sequences (rank 0)."""
        gen, model, base = unwrap(self.gen), Scores(), Scores()
        was = gen.training
        gen.eval()
        for i in range(0, len(self.val), 50):
            clip = to_clip(self.val[i:i + 50], self.rt.device)
            ctx, fut = clip[:, :T_IN], clip[:, T_IN:]
            with self.rt.autocast():
                model.add(gen(ctx).float(), fut)
            base.add(copy_last(ctx, fut.shape[1]), fut)
        gen.train(was)
        return model.mean(), base.mean()

    def evaluate_and_save(self, step: int) -> None:
        if self.rt.is_main and self.val is not None:
            m, b = self.validate()
            self.metrics = {f"val_{k}": round(v, 4) for k, v in m.items()}
            self.baseline = {f"val_{k}": round(v, 4) for k, v in b.items()}
            self.history.append({"step": step, **self.metrics})
            self.report.metrics("eval", step=step, val_mse=self.metrics["val_mse"], copy_last_mse=self.baseline["val_mse"],
                                val_ssim=self.metrics["val_ssim"], val_grad=self.metrics["val_grad"])
        self.save(step, write_model=True)
        self.rt.barrier()

    def save(self, step: int, write_model: bool) -> None:
        if not self.rt.is_main:
            return
        if write_model:
            save_model(self.model_path, unwrap(self.gen).state_dict(), self.meta(step),
                       dtype=self.cfg.save_dtype)
        st = {"model": unwrap(self.gen).state_dict(), "opt_g": self.opt_g.state_dict(), "scaler": self.rt.scaler.state_dict(),
              "rng": rng_state(), "step": step, "elapsed": self.seconds(), "history": self.history,
              "metrics": self.metrics, "config": asdict(self.cfg)}
        if self.disc is not None:
            st.update(disc=unwrap(self.disc).state_dict(), opt_d=self.opt_d.state_dict())
        save_state(self.state_file, st, task=TASK)

    def snapshot(self, step: int) -> None:
        """OUT/snapshots/step-NNNNNNN.safetensors: the predictor as of this step, a model file of its own (for
        `dlkit models average`); it carries validation metrics only when they were measured at this step."""
        if not self.rt.is_main:
            return
        fresh = bool(self.history) and self.history[-1]["step"] == step
        path = write_snapshot(self.cfg.out, step, unwrap(self.gen).state_dict(), self.meta(step, None if fresh else {}),
                              self.cfg.save_dtype)
        self.report.event("snapshot", step=step, path=str(path))

    def meta(self, step: int, metrics: dict | None = None) -> dict:
        cfg, m = self.cfg, self.mcfg
        metrics = self.metrics if metrics is None else metrics
        head = f"val MSE {metrics['val_mse']:.1f}, SSIM {metrics['val_ssim']:.3f}" if metrics else f"step {step}"
        recipe = {k: v for k, v in asdict(cfg).items() if k not in ("out", "resume")}
        recipe["data"] = Path(cfg.data).name  # the recipe names files, not this machine's folders
        if cfg.init:  # the shape came from the init model ("config" has it): the preset options did not apply
            recipe.update(init=Path(cfg.init).name, preset=None, width=None, depth=None, kernel=None)
        return {"task": TASK, "arch": m.arch, "config": m.to_dict(), "loss": cfg.loss,
                "normalisation": f"frames in [0, 1], {m.channels} channel(s), {m.size}x{m.size}; {m.t_in} in -> {m.t_out} out",
                "training": {"data": f"Moving MNIST from {Path(cfg.data).name} (train digits, on the fly)", "steps": step,
                             "sequences": step * cfg.batch_size * self.rt.world_size, "seconds": round(self.seconds(), 1),
                             "loss": cfg.loss, "init": self.init_meta, "recipe": recipe},
                "metrics": metrics, "headline": f"{m.arch} {cfg.loss}, {step} steps; {head}"}


def train(cfg: TrainConfig, rt: Runtime, report: Reporter, stop: StopSignal | None = None) -> TrainResult:
    """Train (or continue with ``cfg.resume``) a frame predictor; see the module docstring."""
    stop = stop or StopSignal()
    cfg.validate()
    state = None
    if cfg.resume:
        state = resume_state(state_path(Path(cfg.out) / MODEL_FILE), TASK, required=("model", "opt_g", "step", "rng"),
                             config=asdict(cfg), shape_keys=SHAPE_KEYS)
    run = _Run(cfg, rt, report, read_digits(cfg.data, "train"), state)
    run.announce()
    step, t0 = run.step, time.monotonic()  # --max-time counts this run only
    run.gen.train()
    with report.progress(cfg.steps, "frame-predict-train", start=step) as update:
        while step < cfg.steps:
            fields = run.train_step(step)
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                update(1, **run.log(step, fields))
            else:
                update(1)
            if step % cfg.eval_every == 0 and step < cfg.steps:
                run.evaluate_and_save(step)
            if cfg.snapshot_every and step % cfg.snapshot_every == 0 and step < cfg.steps:
                run.snapshot(step)
            reason = stop_reason(stop, rt, t0=t0, max_time_s=cfg.max_time, step=step, max_steps=cfg.steps)
            if reason == "interrupted":
                save_and_interrupt(rt, lambda: run.save(step, write_model=False), f"at step {step}", run.state_file)
            if reason == "max-time":
                report.info(f"frame-predict-train: --max-time reached after step {step}")
            if reason:
                break
    run.evaluate_and_save(step)
    if cfg.snapshot_every and step % cfg.snapshot_every == 0:
        run.snapshot(step)  # the last step's (again, when --max-time stopped the run there: now with its metrics)
    return TrainResult(str(run.model_path), step, run.seconds(), run.metrics, run.baseline)
