"""Training a GAN: the minimax game of Goodfellow et al. 2014, Algorithm 1, with the choices exposed.

The players and one iteration of the game live in ``game.py``; here: the run's configuration and its defaults
(Adam with the GAN settings - Radford et al.: lr 2e-4, beta1 0.5; wgan-gp: lr 1e-4, betas (0, 0.9), 5 critic
steps), the run folder's outputs, and the loop (logging, collapse/NaN checks, samples, checkpoints, resume).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from dlkit.core.atomic import check_writable_dir
from dlkit.core.modelfile import save_model
from dlkit.core.state import save_state, state_path
from dlkit.core.errors import OutputError, UsageError
from dlkit.core.interrupt import StopSignal
from dlkit.core.optim import check_finite
from dlkit.core.report import Reporter
from dlkit.core.rundir import clear_snapshots, write_snapshot
from dlkit.core.runtime import Runtime, num_params, unwrap
from dlkit.core.training import resume_state, save_and_interrupt, stop_reason
from dlkit.tasks.gan import figures
from dlkit.tasks.gan.data import GANData, default_arch, load_data, sample_toy, to_pixels, toy_metrics
from dlkit.tasks.gan.game import Game
from dlkit.nets.gan_losses import LOSSES
from dlkit.tasks.gan.model import DCGAN_SIZES, GANConfig, check_config

TASK = "gan"
MODEL_FILE = "model.safetensors"
SHAPE_KEYS = ("arch", "z_dim", "g_width", "d_width", "conditional", "spectral_norm", "image_size", "channels", "dataset")


@dataclass
class TrainConfig:
    dataset: str = "mnist"  # gaussian | ring | mnist | cifar10 | folder
    data: str | None = None
    download: bool = False
    image_size: int | None = None
    channels: int | None = None
    arch: str | None = None  # mlp | dcgan (default: mlp for the toys, dcgan for images)
    z_dim: int | None = None
    g_width: int | None = None
    d_width: int | None = None
    conditional: bool = False
    spectral_norm: bool = False
    mbstd: bool = True  # toys: D sees the minibatch std (keeps the 1-D toy from narrowing)
    loss: str = "non-saturating"
    d_steps: int | None = None  # default 5 for wgan-gp, else 1
    g_steps: int = 1
    lr: float | None = None
    d_lr: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    gp_weight: float = 10.0
    batch_size: int | None = None
    steps: int | None = None  # iterations (one iteration = d_steps D updates + g_steps G updates)
    epochs: int | None = None
    ema: float | None = None  # generator EMA decay (default 0.999, toys 0.99); 0 switches it off
    sample_every: int | None = None  # iterations between sample grids (default: once per epoch / 500 for toys)
    snapshot_every: int | None = None  # iterations between generator copies in OUT/snapshots/ (None: none)
    log_every: int = 50
    collapse_steps: int = 2000  # warn after D loss stays near 0 for this many iterations
    max_time: float | None = None  # seconds
    out: str = "runs/gan"
    seed: int = 0
    save_dtype: str = "fp32"
    resume: bool = False
    init: str | None = None  # start the generator (and a matching discriminator) from this gan model file
    d_warmup: int = 0  # discriminator-only updates against the --init generator before the first iteration


@dataclass
class TrainResult:
    model_path: str
    steps: int
    d_updates: int
    g_updates: int
    seconds: float
    metrics: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    interrupted: bool = False


def resolve(cfg: TrainConfig, data: GANData) -> tuple[TrainConfig, GANConfig]:
    """Fill the data-dependent defaults and check the combination (one UsageError line each)."""
    toy = data.is_toy
    arch = default_arch(cfg.arch, data.name)
    if cfg.loss not in LOSSES:
        raise UsageError(f"--loss {cfg.loss}: expected one of {', '.join(LOSSES)}")
    wgan = cfg.loss == "wgan-gp"
    d_steps = cfg.d_steps if cfg.d_steps is not None else (5 if wgan else 1)
    if d_steps < 1 or cfg.g_steps < 1:
        raise UsageError(f"--d-steps and --g-steps must be at least 1 (got {d_steps} and {cfg.g_steps})")
    if cfg.conditional and (toy or not data.classes or len(data.classes) < 2):
        raise UsageError("--conditional needs labelled images with at least 2 classes (class subfolders)")
    beta1 = cfg.beta1 if cfg.beta1 is not None else (0.0 if wgan else 0.5)
    beta2 = cfg.beta2 if cfg.beta2 is not None else (0.9 if wgan else 0.999)
    lr = cfg.lr or (1e-3 if toy else 1e-4 if wgan else 2e-4)
    batch = cfg.batch_size or (256 if toy else 128 if arch == "dcgan" else 100)
    if not toy:
        batch = min(batch, len(data))
    wide = 64 if arch == "dcgan" else (64 if toy else 512)
    z_dim = cfg.z_dim or ({"gaussian": 1, "ring": 2}.get(data.name, 100))
    mcfg = GANConfig(arch=arch, data_shape=data.shape, z_dim=z_dim, num_classes=len(data.classes) if cfg.conditional else 0,
                     g_width=cfg.g_width or wide, d_width=cfg.d_width or (wide // 2 if arch == "mlp" and not toy else wide),
                     d_norm="none" if wgan else "batch", spectral_norm=cfg.spectral_norm,
                     dropout=0.5 if arch == "mlp" and not toy else 0.0, mbstd=toy and cfg.mbstd)
    try:
        check_config(mcfg)
    except ValueError as e:
        raise UsageError(str(e)) from None
    ema = cfg.ema if cfg.ema is not None else (0.99 if toy else 0.999)
    out = TrainConfig(**{**asdict(cfg), "arch": arch, "ema": ema, "d_steps": d_steps, "lr": lr, "d_lr": cfg.d_lr or lr,
                         "beta1": beta1, "beta2": beta2, "batch_size": batch, "z_dim": z_dim,
                         "g_width": mcfg.g_width, "d_width": mcfg.d_width})
    return out, mcfg


def model_meta(cfg: TrainConfig, mcfg: GANConfig, data: GANData, game: Game, seconds: float, metrics: dict,
               with_discriminator: bool = True) -> dict:
    recipe = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "out")}
    what = data.name if data.is_toy else f"{data.name} ({len(data)} images)"
    head = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
    return {
        "task": TASK,
        "arch": mcfg.arch,
        "config": mcfg.to_dict(),
        "has_discriminator": with_discriminator,
        "toy": data.name if data.is_toy else None,
        "classes": list(data.classes) if mcfg.num_classes else [],
        "data_range": "[-1, 1]; pixels = (x + 1) / 2" if mcfg.is_image else "raw coordinates",
        "training": {"data": what, "loss": cfg.loss, "init": game.init_meta, "steps": game.step, "d_updates": game.d_updates,
                     "g_updates": game.g_updates, "epochs": round(game.real_used / game.batches.per_epoch, 2)
                     if game.batches.per_epoch else None, "seconds": round(seconds, 1), "ema": cfg.ema, "recipe": recipe},
        "metrics": metrics,
        "headline": f"{mcfg.arch} on {data.name}, {game.step} iterations" + (f"; {head}" if head else ""),
    }


def generator_state(game: Game, with_discriminator: bool = True) -> dict:
    sd = {f"generator.{k}": v for k, v in game.sampler().state_dict().items()}
    if with_discriminator:
        sd.update({f"discriminator.{k}": v for k, v in unwrap(game.disc).state_dict().items()})
    return sd


class _Outputs:
    """The run folder: model file, state, metrics.jsonl, losses.png, samples/ (rank 0 writes)."""

    def __init__(self, cfg: TrainConfig, mcfg: GANConfig, data: GANData, rt: Runtime, report: Reporter):
        self.cfg, self.mcfg, self.data, self.rt, self.report = cfg, mcfg, data, rt, report
        out = Path(cfg.out)
        self.model_path, self.metrics_path, self.samples_dir = out / MODEL_FILE, out / "metrics.jsonl", out / "samples"
        self.state_file = state_path(self.model_path)
        if rt.is_main:
            check_writable_dir(out)
            if not cfg.resume:  # --overwrite replaces the run: its snapshots must not mix with this one's
                clear_snapshots(out)
        g = torch.Generator().manual_seed(cfg.seed + 12345)
        n = 64 if mcfg.is_image else 2000
        self.fixed_z = torch.randn(n, mcfg.z_dim, generator=g)
        self.fixed_y = torch.arange(n) % mcfg.num_classes if mcfg.num_classes else None
        self.samples: list[str] = []
        self.metrics: dict = {}

    def log(self, row: dict) -> None:
        if self.rt.is_main:
            try:
                with open(self.metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
            except OSError as e:  # a full disk: one line (the model file keeps the last good weights)
                raise OutputError(f"cannot write '{self.metrics_path}': {e.strerror or e}") from None

    @torch.no_grad()
    def sample(self, game: Game, history: list) -> None:
        """Samples from the fixed noise (a grid, or the toy's plot), toy metrics, the losses plot."""
        if not self.rt.is_main:
            return
        gen, dev = game.sampler(), self.rt.device
        was = gen.training
        gen.eval()
        y = self.fixed_y.to(dev) if self.fixed_y is not None else None
        x = gen(self.fixed_z.to(dev), y).float().cpu()
        gen.train(was)
        try:
            self.samples_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create '{self.samples_dir}': {e.strerror or e}") from None
        if self.data.is_toy:
            real = sample_toy(self.data.name, len(x), torch.Generator().manual_seed(self.cfg.seed + 1))
            self.metrics = {k: round(v, 4) for k, v in toy_metrics(self.data.name, x).items()}
            self.report.metrics("eval", step=game.step, **self.metrics)
            path = self.samples_dir / f"step-{game.step:07d}.png"
            figures.plot_toy(self.data.name, real.numpy(), x.numpy(), path, f"iteration {game.step}")
        else:
            from dlkit.vision.grid import save_grid

            epoch = game.real_used / game.batches.per_epoch
            path = save_grid(to_pixels(x), self.samples_dir / f"epoch-{epoch:06.2f}.png", nrow=8)
        self.samples.append(str(path))
        self.report.event("samples", step=game.step, path=str(path))
        figures.plot_history(history, Path(self.cfg.out) / "losses.png", self.cfg.loss)

    def save(self, game: Game, history: list, seconds: float, healthy: bool, write_model: bool = True) -> None:
        """Written by rank 0; called on every rank (the game's state gathers the ranks' RNG states)."""
        st = {**game.state(), "history": history, "elapsed": seconds, "config": asdict(self.cfg),
              "init_meta": game.init_meta}
        if not self.rt.is_main:
            return
        if write_model and (healthy or not self.model_path.exists()):
            meta = model_meta(self.cfg, self.mcfg, self.data, game, seconds, self.metrics)
            save_model(self.model_path, generator_state(game), meta,
                            dtype=self.cfg.save_dtype)
        save_state(self.state_file, st, task=TASK)

    def snapshot(self, game: Game, seconds: float) -> Path | None:
        """OUT/snapshots/step-NNNNNNN.safetensors: the generator (its EMA) as of this iteration, a model file of
        its own (`gan-sample`, `gan-eval`), for averaging the late ones (`dlkit models average`). Rank 0."""
        if not self.rt.is_main:
            return None
        meta = model_meta(self.cfg, self.mcfg, self.data, game, seconds, {}, with_discriminator=False)
        path = write_snapshot(self.cfg.out, game.step, generator_state(game, with_discriminator=False), meta,
                              self.cfg.save_dtype)
        self.report.event("snapshot", step=game.step, path=str(path))
        return path


def _plan(cfg: TrainConfig, data: GANData, per_epoch: int) -> tuple[int, int]:
    """(total iterations, iterations between samples)."""
    if data.is_toy:
        if cfg.epochs:
            raise UsageError("--epochs is for image data; the toys train for --steps iterations")
        total = cfg.steps or 2000
        return total, cfg.sample_every or min(500, total)
    per_it = max(1, math.ceil(per_epoch / cfg.d_steps))
    total = cfg.steps or (cfg.epochs or 5) * per_it
    return total, cfg.sample_every or per_it


MAX_IMAGE_SIZE = 512  # --image-size (mlp, folders): every image is kept decoded, C x N x N bytes
MAX_Z_DIM = 4096
MAX_WIDTH = 16384
MAX_PARAMS = 50_000_000  # per network: with gradients, Adam's two moments and the EMA, ~20 bytes each


def check_options(cfg: TrainConfig) -> None:
    """Upper bounds of the options that decide memory, with the reason (one UsageError line each)."""
    from dlkit.core.limits import at_most

    at_most("--image-size", cfg.image_size, MAX_IMAGE_SIZE, "every image is kept decoded (C x N x N bytes) and "
            "the mlp's first layer has C x N x N x width weights")
    at_most("--z-dim", cfg.z_dim, MAX_Z_DIM, "the generator's first layer has z-dim x width weights; 100 is usual")
    for opt, v in (("--g-width", cfg.g_width), ("--d-width", cfg.d_width)):
        at_most(opt, v, MAX_WIDTH, "layer weights grow with the square of the width")
    toy = cfg.dataset in ("gaussian", "ring")
    at_most("--batch-size", cfg.batch_size, 65536 if toy else 1024, "every layer's activations are kept for the "
            "backward pass, for the real and the generated batch" + ("" if toy else " (1024 images of 64 px: a few GB)"))


def check_size(mcfg: GANConfig) -> None:
    """Refuse networks over MAX_PARAMS, counted without allocating (built on the meta device)."""
    from dlkit.core.limits import product_at_most
    from dlkit.tasks.gan.model import GANPair

    with torch.device("meta"):
        pair = GANPair(mcfg)
    for name, net in (("generator", pair.generator), ("discriminator", pair.discriminator)):
        n = sum(p.numel() for p in net.parameters())
        product_at_most(f"the {name} (--z-dim {mcfg.z_dim}, --g-width {mcfg.g_width}, --d-width {mcfg.d_width}, "
                        f"data {'x'.join(map(str, mcfg.data_shape))})", n, MAX_PARAMS,
                        "each costs about 20 bytes with gradients, Adam's state and the EMA copy", unit="parameters")


def train(cfg: TrainConfig, rt: Runtime, report: Reporter, stop: StopSignal | None = None) -> TrainResult:
    """Play the game for ``steps`` iterations (or ``epochs``); see the module docstring."""
    stop = stop or StopSignal()
    cfg, mcfg, data, outs, state, init = _setup(cfg, rt, report)
    game = Game(cfg, mcfg, data, rt, state, init.weights() if init and not state else None)
    game.init_meta = state.get("init_meta") if state else (init.meta if init else None)
    total, sample_every = _plan(cfg, data, game.batches.per_epoch)
    history = list(state["history"]) if state else []
    elapsed0, t0 = (state["elapsed"] if state else 0.0), time.monotonic()
    seconds = lambda: elapsed0 + time.monotonic() - t0  # noqa: E731
    _banner(cfg, mcfg, data, rt, report, game, total)
    # inside an iteration's D updates (one process only: under DDP every rank must make the same updates)
    cut_short = None if rt.distributed else (
        lambda: stop.requested or bool(cfg.max_time and time.monotonic() - t0 > cfg.max_time))
    monitor = _Monitor(cfg, rt, report, outs, history)
    reason = None
    game.gen.train()
    game.disc.train()
    if cfg.d_warmup and game.d_updates == 0:
        _warm_up(cfg, game, report, cut_short)
    with report.progress(total, "gan-train", start=game.step) as update:
        while game.step < total and reason is None:
            it = game.step + 1
            log = it % cfg.log_every == 0 or it == total
            monitor.add(game.iteration(want_norm=log, should_stop=cut_short))
            if log:
                row = monitor.log(it, game)
                update(cfg.log_every if it % cfg.log_every == 0 else it % cfg.log_every,
                       loss_d=row["loss_d"], loss_g=row["loss_g"], d_real=row["d_real"], d_fake=row["d_fake"])
            if it % sample_every == 0 or it == total:
                outs.sample(game, history)
                outs.save(game, history, seconds(), monitor.healthy)
            if cfg.snapshot_every and it % cfg.snapshot_every == 0 and monitor.healthy:
                outs.snapshot(game, seconds())
            reason = stop_reason(stop, rt, t0=t0, max_time_s=cfg.max_time, step=it)  # this run's time only
    if reason == "interrupted":
        save_and_interrupt(rt, lambda: outs.save(game, history, seconds(), monitor.healthy, write_model=False),
                           f"at iteration {game.step}", outs.state_file)
    if reason == "max-time":
        report.info(f"gan-train: --max-time reached after iteration {game.step}")
    rt.barrier()  # rank 0's last save is done before any rank asks whether the model file exists
    if game.step % sample_every != 0 and game.step != total or not outs.model_path.exists():
        outs.sample(game, history)
        outs.save(game, history, seconds(), monitor.healthy)
    rt.barrier()
    return TrainResult(str(outs.model_path), game.step, game.d_updates, game.g_updates, seconds(), outs.metrics,
                       monitor.warned, outs.samples)


def _warm_up(cfg: TrainConfig, game: Game, report: Reporter, cut_short) -> None:
    """--d-warmup N: N discriminator updates with the generator held fixed (a fresh discriminator against a
    trained generator would otherwise give it noise for gradients); they count as D updates, not iterations."""
    with report.progress(cfg.d_warmup, "gan-train: discriminator warm-up") as update:
        for i in range(cfg.d_warmup):
            row = game.d_update(0, noise_key=-(i + 1))
            game.rt.scaler.update()
            if (i + 1) % cfg.log_every == 0 or i + 1 == cfg.d_warmup:
                update(cfg.log_every if (i + 1) % cfg.log_every == 0 else (i + 1) % cfg.log_every,
                       loss_d=float(row["loss_d"]), d_real=float(row["d_real"]), d_fake=float(row["d_fake"]))
            if cut_short is not None and cut_short():
                break
    report.info(f"gan-train: {game.d_updates} discriminator warm-up updates; last loss_d {float(row['loss_d']):.4f}, "
                f"D(x) {float(row['d_real']):.3f}, D(G(z)) {float(row['d_fake']):.3f}")


def _setup(cfg: TrainConfig, rt: Runtime, report: Reporter):
    """Checked options, the data, the resolved configs, the run folder and (with --resume) the saved state."""
    check_options(cfg)
    if cfg.image_size and cfg.arch != "mlp" and cfg.image_size not in DCGAN_SIZES:
        raise UsageError(f"--image-size {cfg.image_size}: dcgan makes {'/'.join(map(str, DCGAN_SIZES))} px images "
                         "(or use --arch mlp)")
    data = load_data(cfg.dataset, cfg.data, cfg.image_size, cfg.channels, cfg.download)
    init = None
    if cfg.init:  # its shapes are the run's defaults; its weights are used unless --resume's state holds them
        init = load_init(cfg.init, data)
        cfg = replace(cfg, arch=cfg.arch or init.cfg.arch, z_dim=cfg.z_dim or init.cfg.z_dim,
                      g_width=cfg.g_width or init.cfg.g_width, d_width=cfg.d_width or init.cfg.d_width,
                      spectral_norm=cfg.spectral_norm or init.cfg.spectral_norm)
    given = cfg
    cfg, mcfg = resolve(cfg, data)
    check_size(mcfg)
    if init is not None and not cfg.resume:
        init.check(mcfg, report)
    for note in data.notes:
        report.info(f"gan-train: note: {note}")
    outs = _Outputs(cfg, mcfg, data, rt, report)
    state = None
    if cfg.resume:
        state = resume_state(outs.state_file, TASK, required=("generator", "discriminator", "step", "config"),
                             config=asdict(cfg), shape_keys=SHAPE_KEYS + ("loss",))
        cfg = resumed_settings(given, cfg, state["config"])
        outs.cfg = cfg
    return cfg, mcfg, data, outs, state, init


class Init:
    """``--init MODEL``: the generator of a gan model file (and its discriminator when the file has one of the
    run's shape), to continue training it: the bundled generators keep no discriminator, so theirs starts fresh
    (``--d-warmup N`` trains it alone against the loaded generator first)."""

    def __init__(self, spec: str, pair, meta: dict):
        self.spec, self.pair, self.cfg = spec, pair, pair.cfg
        self.meta = {"name": meta.get("name"), "headline": meta.get("headline")}
        self.discriminator: dict | None = None

    def check(self, mcfg: GANConfig, report: Reporter) -> None:
        """The run's generator must be the file's (one UsageError line naming the option that differs)."""
        mine, theirs = mcfg, self.cfg
        for opt, a, b in (("--arch", mine.arch, theirs.arch), ("--z-dim", mine.z_dim, theirs.z_dim),
                          ("--g-width", mine.g_width, theirs.g_width)):
            if a != b:
                raise UsageError(f"{opt} {a}: the --init generator '{self.spec}' has {b} (leave {opt} out to take it)")
        if bool(mine.num_classes) != bool(theirs.num_classes) or (mine.num_classes and mine.num_classes != theirs.num_classes):
            raise UsageError(f"--init '{self.spec}' is {'a class-conditional' if theirs.num_classes else 'an unconditional'}"
                             f" generator{f' of {theirs.num_classes} classes' if theirs.num_classes else ''}; "
                             f"this run's is not (--conditional and the data's classes decide it)")
        from dlkit.tasks.gan.model import GANPair

        with torch.device("meta"):
            fresh = GANPair(mcfg).discriminator.state_dict()
        have = self.pair.discriminator.state_dict() if self.pair.discriminator is not None else {}
        if have and {k: v.shape for k, v in have.items()} == {k: v.shape for k, v in fresh.items()}:
            self.discriminator = have
            report.info(f"gan-train: generator and discriminator from --init {self.spec}")
        else:
            why = "keeps no discriminator" if not have else "has a discriminator of another shape"
            report.info(f"gan-train: generator from --init {self.spec}; the file {why}, so this run's starts fresh")

    def weights(self) -> dict:
        return {"generator": self.pair.generator.state_dict(), "discriminator": self.discriminator}


def load_init(spec: str, data: GANData) -> Init:
    """The --init file, loaded (one line if it is not a gan model), and checked against the data's shape."""
    from dlkit.tasks.gan.infer import load_gan

    pair, meta = load_gan(spec)
    if tuple(pair.cfg.data_shape) != tuple(data.shape):
        raise UsageError(f"--init '{spec}' makes {'x'.join(map(str, pair.cfg.data_shape))} samples but the data is "
                         f"{'x'.join(map(str, data.shape))}" + ("" if data.is_toy else " (set --image-size/--channels)"))
    return Init(spec, pair, meta)


RESUMED_KEYS = ("lr", "d_lr", "beta1", "beta2", "ema")


def resumed_settings(given: TrainConfig, resolved: TrainConfig, saved: dict) -> TrainConfig:
    """With --resume, the optimizer settings the command line names take effect and the ones it leaves out keep
    the saved run's values (not this run's defaults): ``--lr 1e-4 --resume`` lowers the rate, a plain ``--resume``
    continues as the run was. An unnamed --d-lr that followed --lr in the saved run follows the new --lr."""
    out = {}
    for key in RESUMED_KEYS:
        if getattr(given, key) is not None or not isinstance(saved.get(key), (int, float)):
            continue
        if key == "d_lr" and given.lr is not None and saved.get("d_lr") == saved.get("lr"):
            continue  # resolve() already set it to the new --lr
        out[key] = float(saved[key])
    return replace(resolved, **out) if out else resolved


def _banner(cfg: TrainConfig, mcfg: GANConfig, data: GANData, rt: Runtime, report: Reporter, game: Game,
            total: int) -> None:
    n_g, n_d = num_params(game.gen), num_params(game.disc)
    what = data.name if data.is_toy else f"{data.name}: {len(data)} images {'x'.join(map(str, data.shape))}"
    report.start("gan-train", f"{mcfg.arch} G {n_g / 1e6:.2f}M / D {n_d / 1e6:.2f}M parameters, {cfg.loss} loss, "
                 f"k={cfg.d_steps} D / {cfg.g_steps} G steps, batch {cfg.batch_size}, {what}", rt, game.step,
                 unit="iteration", task=TASK, arch=mcfg.arch, loss=cfg.loss, d_steps=cfg.d_steps, g_steps=cfg.g_steps,
                 g_params=n_g, d_params=n_d, steps=total)


class _Monitor:
    """The logging window: the iterations' losses summed until a log line, then averaged over the ranks, written
    to metrics.jsonl and reported; and the collapse check (the discriminator loss near 0 for ``collapse_steps``
    iterations: a warning, and the model file keeps the last good weights until the game recovers)."""

    def __init__(self, cfg: TrainConfig, rt: Runtime, report: Reporter, outs: _Outputs, history: list):
        self.cfg, self.rt, self.report, self.outs, self.history = cfg, rt, report, outs, history
        self.sums: dict[str, torch.Tensor] = {}
        self.count, self.stretch, self.healthy, self.warned = 0, 0, True, []

    def add(self, values: dict) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def log(self, it: int, game: Game) -> dict:
        cfg, outs = self.cfg, self.outs
        row = {k: round(self.rt.all_reduce_mean(float(v) / (1 if k == "g_grad_norm" else self.count)), 5)
               for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        check_finite(row["loss_d"] + row["loss_g"], it, keep=str(outs.model_path) if outs.model_path.exists() else None)
        row = {"step": it, "epoch": round(game.real_used / game.batches.per_epoch, 3) if game.batches.per_epoch else None, **row}
        self.history.append(row)
        outs.log(row)
        self.report.event("step", **row)
        self.stretch = self.stretch + cfg.log_every if (cfg.loss != "wgan-gp" and row["loss_d"] < 0.05) else 0
        if self.stretch >= cfg.collapse_steps and self.healthy:
            self.healthy = False
            msg = (f"the discriminator loss has been near 0 for {self.stretch} iterations (iteration {it}): the game has "
                   f"likely collapsed; {outs.model_path} keeps the last good model")
            self.report.warn(msg)
            self.warned.append(msg)
        elif self.stretch == 0 and not self.healthy:
            self.healthy = True
        return row
