"""The two players of one GAN run: networks, optimizers, EMA, data and noise streams, one iteration of the game.

One iteration = ``d_steps`` discriminator updates (each on a fresh minibatch of real data and one of
generated samples) followed by ``g_steps`` generator updates (Goodfellow et al. 2014, Algorithm 1: k D steps,
then one G step). Mixed precision goes through one GradScaler shared by both optimizers: GradScaler allows one
``step`` per optimizer between ``update`` calls, so the scaler is updated once per iteration when each player
moves once, and in between when one player moves several times (PyTorch's multiple-optimizer AMP recipe).

Real batches come from a permutation seeded by (seed, epoch) and noise from a generator seeded by
(seed, iteration), so a resumed run sees exactly the data and noise an uninterrupted one would; under DDP
each rank takes its own slice of the permutation and its own noise.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from dlkit.core.errors import UsageError
from dlkit.core.optim import optimizer_step
from dlkit.core.runtime import Runtime, rng_state, set_rng_state, unwrap
from dlkit.tasks.gan.data import GANData, sample_toy, to_unit
from dlkit.nets.gan_losses import d_loss, d_probability, g_loss, gradient_penalty
from dlkit.tasks.gan.model import GANConfig, GANPair

if TYPE_CHECKING:
    from dlkit.tasks.gan.train import TrainConfig


class Batches:
    """Real minibatches by a counter: batch ``i`` of epoch ``i // per_epoch`` of a (seed, epoch) permutation."""

    def __init__(self, data: GANData, batch: int, seed: int, rank: int = 0, world: int = 1):
        self.data, self.batch, self.seed, self.rank, self.world = data, batch, seed, rank, world
        self.per_epoch = 0 if data.is_toy else max(1, len(data) // world // batch)
        self._epoch, self._perm = -1, None

    def get(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.data.is_toy:
            g = torch.Generator().manual_seed(self.seed * 7919 + i * self.world + self.rank + 1)
            return sample_toy(self.data.name, self.batch, g), None
        epoch, j = divmod(i, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            self._perm = torch.randperm(len(self.data), generator=g)[self.rank::self.world]
            self._epoch = epoch
        idx = self._perm[j * self.batch:(j + 1) * self.batch]
        return to_unit(self.data.images[idx]), self.data.labels[idx]


@torch.no_grad()
def standing_stats(gen: torch.nn.Module, mcfg: GANConfig, device, batches: int = 16, batch: int = 256,
                   seed: int = 0) -> torch.nn.Module:
    """A copy of ``gen`` whose BatchNorm running statistics are re-estimated for its own weights.

    The EMA generator's weights are an average, but the BatchNorm statistics it inherits belong to the raw
    generator's last weights; BigGAN (Brock et al. 2019) re-estimates them ("standing statistics"). Here: the
    cumulative mean over ``batches`` seeded batches of noise in train mode. Without BatchNorm: ``gen`` itself."""
    bns = [m for m in gen.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return gen
    gen = copy.deepcopy(gen)
    for m in gen.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    g = torch.Generator().manual_seed(seed + 777)
    gen.train()
    for _ in range(batches):
        z = torch.randn(batch, mcfg.z_dim, generator=g).to(device)
        y = torch.randint(0, mcfg.num_classes, (batch,), generator=g).to(device) if mcfg.num_classes else None
        gen(z, y)
    for m in gen.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    return gen.eval()


class Game:
    """Networks, optimizers, EMA and the counters of one run; :meth:`iteration` plays one round."""

    def __init__(self, cfg: TrainConfig, mcfg: GANConfig, data: GANData, rt: Runtime, state: dict | None,
                 init: dict | None = None):
        self.cfg, self.mcfg, self.rt, self.data = cfg, mcfg, rt, data
        if cfg.loss == "wgan-gp" and rt.distributed:
            raise UsageError("--loss wgan-gp does not run under DDP (its double backward bypasses DDP); use hinge")
        pair = GANPair(mcfg)
        self.init_meta: dict | None = None  # --init's name and headline, for the model file (train.py sets it)
        if init is not None and state is None:  # --init: the EMA copy below starts from the same weights
            pair.generator.load_state_dict(init["generator"])
            if init.get("discriminator"):
                pair.discriminator.load_state_dict(init["discriminator"])
        self.ema = copy.deepcopy(pair.generator).eval().requires_grad_(False) if cfg.ema > 0 else None
        if state is not None:
            pair.generator.load_state_dict(state["generator"])
            pair.discriminator.load_state_dict(state["discriminator"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        self.ema = self.ema.to(rt.device) if self.ema is not None else None
        self.gen, self.disc = rt.wrap(pair.generator), rt.wrap(pair.discriminator)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.d_lr, betas=(cfg.beta1, cfg.beta2))
        self.batches = Batches(data, cfg.batch_size, cfg.seed, rt.rank, rt.world_size)
        self.step = self.real_used = self.d_updates = self.g_updates = 0
        if state is not None:
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
            # the loaded groups carry the saved run's rates and betas; this run's settings (train.resumed_settings) win
            for opt, lr in ((self.opt_g, cfg.lr), (self.opt_d, cfg.d_lr)):
                for group in opt.param_groups:
                    group["lr"], group["betas"] = lr, (cfg.beta1, cfg.beta2)
            rt.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"], rt.rank)
            self.step, self.real_used = state["step"], state["real_used"]
            self.d_updates, self.g_updates = state["d_updates"], state["g_updates"]

    def noise(self, n: int, tag: int, key: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Seeded by (seed, iteration, tag), or by ``key`` (negative: the warm-up's, never an iteration's)."""
        key = self.step * 8 + tag if key is None else key
        g = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + key) * self.rt.world_size + self.rt.rank)
        z = torch.randn(n, self.mcfg.z_dim, generator=g)
        y = torch.randint(0, self.mcfg.num_classes, (n,), generator=g) if self.mcfg.num_classes else None
        return z.to(self.rt.device), (y.to(self.rt.device) if y is not None else None)

    def d_update(self, k: int, noise_key: int | None = None) -> dict[str, torch.Tensor]:
        cfg, rt = self.cfg, self.rt
        real, y = self.batches.get(self.real_used)
        self.real_used += 1
        real = real.to(rt.device, non_blocking=True)
        y = y.to(rt.device) if (y is not None and self.mcfg.num_classes) else None
        z, yf = self.noise(real.shape[0], k, noise_key)
        self.opt_d.zero_grad(set_to_none=True)  # the G update left gradients in D
        with rt.autocast():
            with torch.no_grad():
                fake = self.gen(z, yf)
            l_real, l_fake = self.disc(real, y), self.disc(fake, yf)
        loss = d_loss(cfg.loss, l_real.float(), l_fake.float())
        if cfg.loss == "wgan-gp":
            loss = loss + cfg.gp_weight * gradient_penalty(unwrap(self.disc), real.float(), fake.float(), yf if y is None else y)
        optimizer_step(loss, self.opt_d, rt.scaler, update_scaler=False)
        self.d_updates += 1
        return {"loss_d": loss.detach(), "d_real": d_probability(cfg.loss, l_real.detach().float()).mean(),
                "d_fake": d_probability(cfg.loss, l_fake.detach().float()).mean()}

    def g_update(self, k: int, want_norm: bool) -> dict[str, torch.Tensor]:
        cfg, rt = self.cfg, self.rt
        z, yf = self.noise(cfg.batch_size, 4 + k)
        toggle = not rt.distributed  # DDP expects every D parameter to get a gradient
        if toggle:
            self.disc.requires_grad_(False)
        with rt.autocast():
            l_fake = self.disc(self.gen(z, yf), yf)
        loss = g_loss(cfg.loss, l_fake.float())
        # a clip threshold no norm reaches: optimizer_step unscales and returns the norm without clipping
        norm = optimizer_step(loss, self.opt_g, rt.scaler, clip=1e30 if want_norm else 0.0, update_scaler=False)
        if toggle:
            self.disc.requires_grad_(True)
        self.g_updates += 1
        self.update_ema()
        out = {"loss_g": loss.detach()}
        if norm is not None:
            out["g_grad_norm"] = torch.tensor(norm)
        return out

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.ema is None:
            return
        decay = min(self.cfg.ema, (1 + self.g_updates) / (10 + self.g_updates))  # short runs: a faster start
        for e, p in zip(self.ema.parameters(), unwrap(self.gen).parameters()):
            e.lerp_(p.detach(), 1 - decay)
        for e, b in zip(self.ema.buffers(), unwrap(self.gen).buffers()):
            e.copy_(b)

    def iteration(self, want_norm: bool, should_stop=None) -> dict[str, torch.Tensor]:
        """Algorithm 1: d_steps D updates, then g_steps G updates; the scaler is updated once per iteration
        (plus once between repeated updates of the same player, which GradScaler requires).

        ``should_stop()`` is asked after each D update (a huge --d-steps must not outlast --max-time or
        Ctrl-C): when true, the remaining D updates are skipped and the iteration ends with its G updates."""
        out: dict[str, torch.Tensor] = {}
        for k in range(self.cfg.d_steps):
            out = self.d_update(k)
            if k < self.cfg.d_steps - 1 and should_stop is not None and should_stop():
                break
            if k < self.cfg.d_steps - 1:
                self.rt.scaler.update()
        for k in range(self.cfg.g_steps):
            out.update(self.g_update(k, want_norm and k == 0))
            if k < self.cfg.g_steps - 1:
                self.rt.scaler.update()
        self.rt.scaler.update()
        self.step += 1
        return out

    def sampler(self) -> torch.nn.Module:
        """The generator used for samples and the model file: the EMA copy (with BatchNorm statistics
        recomputed for its own weights) when there is one."""
        if self.ema is None:
            return unwrap(self.gen)
        return standing_stats(self.ema, self.mcfg, self.rt.device, seed=self.cfg.seed)

    def state(self) -> dict:
        return {"generator": unwrap(self.gen).state_dict(), "discriminator": unwrap(self.disc).state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else {}, "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "scaler": self.rt.scaler.state_dict(), "rng": rng_state(self.rt),
                "step": self.step, "real_used": self.real_used, "d_updates": self.d_updates, "g_updates": self.g_updates}
