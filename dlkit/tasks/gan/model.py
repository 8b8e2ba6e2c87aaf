"""GAN generators and discriminators: ``mlp`` (Goodfellow et al. 2014) and ``dcgan`` (Radford et al. 2016).

Data live in [-1, 1] (images: tanh output, pixels x/127.5 - 1; toys: raw coordinates, linear output).
Discriminators return one logit per example, shape (B,): the losses (``dlkit.nets.gan_losses``) apply the sigmoid.

* ``mlp``: generator z -> [Linear-ReLU] x 2 -> data; discriminator data -> [Linear-LeakyReLU-Dropout] x 2 -> 1.
  Goodfellow et al. used ReLU/sigmoid generators and maxout discriminators with dropout; LeakyReLU replaces
  maxout here (same role: a piecewise-linear unit that passes gradient everywhere, half the parameters).
* ``dcgan``: the DCGAN rules - strided (transposed) convolutions instead of pooling, BatchNorm in both nets
  (not on G's output or D's input layer), ReLU in G with tanh output, LeakyReLU(0.2) in D, no dense hidden
  layers. 28 px starts from 7x7 (two x2 stages), 32 px from 4x4 (three), 64 px from 4x4 (four).
  ``spectral_norm=True`` wraps D's layers (Miyato et al. 2018) and drops its BatchNorm; ``wgan-gp`` also needs
  a D without BatchNorm (the gradient penalty is per example), set with ``d_norm="none"``.
* Class-conditional (``num_classes > 0``): G gets a learned class embedding concatenated to z (Mirza &
  Osindero 2014); D is a projection discriminator (Miyato & Koyama 2018): logit = w.h + <embed(y), h>.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

ARCHS = ("mlp", "dcgan")
DCGAN_SIZES = (28, 32, 64)


@dataclass
class GANConfig:
    arch: str = "dcgan"
    data_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W) for images, (D,) for the toys
    z_dim: int = 100
    num_classes: int = 0  # > 0: class-conditional
    g_width: int = 64  # dcgan: channels of G's last hidden layer (doubles towards z); mlp: hidden units
    d_width: int = 64
    d_norm: str = "batch"  # batch | none (wgan-gp, spectral norm)
    spectral_norm: bool = False
    dropout: float = 0.0  # mlp discriminator (Goodfellow et al. used dropout in D)
    mbstd: bool = False  # mlp discriminator also sees the minibatch's std (Karras et al. 2018), used for the toys

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data_shape"] = list(self.data_shape)
        return d

    @property
    def is_image(self) -> bool:
        return len(self.data_shape) == 3


def config_from_dict(d: dict) -> GANConfig:
    """A config from model metadata (checked field by field: a bad file is one ModelFileError line)."""
    from dlkit.core.config import config_from_dict as checked

    cfg = checked(GANConfig, d, "config")
    cfg.data_shape = tuple(int(v) for v in cfg.data_shape)
    return cfg


def check_config(cfg: GANConfig) -> None:
    """Raise ValueError (one line) for a shape the architecture cannot make."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"architecture '{cfg.arch}': expected one of {', '.join(ARCHS)}")
    if cfg.z_dim < 1:
        raise ValueError(f"latent size {cfg.z_dim} must be at least 1")
    if len(cfg.data_shape) not in (1, 3) or min(cfg.data_shape) < 1:
        raise ValueError(f"data shape {tuple(cfg.data_shape)} must be (D,) or (C, H, W) with every size at least 1")
    if cfg.is_image and cfg.data_shape[0] not in (1, 3):
        raise ValueError(f"images have 1 or 3 channels, not {cfg.data_shape[0]}")
    if cfg.g_width < 1 or cfg.d_width < 1 or cfg.num_classes < 0 or not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"widths must be at least 1, classes at least 0 and dropout in [0, 1) (got {cfg.g_width}, "
                         f"{cfg.d_width}, {cfg.num_classes}, {cfg.dropout})")
    if cfg.arch == "dcgan":
        if not cfg.is_image:
            raise ValueError("dcgan needs images; use --arch mlp for the toy data")
        c, h, w = cfg.data_shape
        if h != w or h not in DCGAN_SIZES:
            raise ValueError(f"dcgan makes {'/'.join(map(str, DCGAN_SIZES))} px square images, not {h}x{w} "
                             "(use --image-size to resize the data)")
        if c not in (1, 3):
            raise ValueError(f"dcgan makes 1- or 3-channel images, not {c}")


def _n_up(size: int) -> tuple[int, int]:
    """(start side, number of x2 stages) for a dcgan of ``size`` px."""
    return (7, 2) if size == 28 else (4, {32: 3, 64: 4}[size])


class DCGANGenerator(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        c_out, size, _ = cfg.data_shape
        self.start, n_up = _n_up(size)
        widths = [cfg.g_width * 2 ** i for i in reversed(range(n_up))]  # e.g. [256, 128, 64] for 32 px
        z_in = cfg.z_dim + (cfg.z_dim if cfg.num_classes else 0)
        self.embed = nn.Embedding(cfg.num_classes, cfg.z_dim) if cfg.num_classes else None
        # z -> (B, widths[0], start, start): a "project and reshape" layer, as in the paper
        self.project = nn.Sequential(nn.Linear(z_in, widths[0] * self.start ** 2, bias=False))
        self.bn0 = nn.BatchNorm2d(widths[0])
        ups: list[nn.Module] = []
        for i in range(n_up - 1):
            ups += [nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1, bias=False), nn.BatchNorm2d(widths[i + 1]),
                    nn.ReLU(True)]
        ups += [nn.ConvTranspose2d(widths[-1], c_out, 4, 2, 1), nn.Tanh()]
        self.ups = nn.Sequential(*ups)
        self.width0 = widths[0]

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, z_dim), y (B,) long or None -> images (B, C, H, W) in [-1, 1]."""
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)
        h = self.project(z).view(z.shape[0], self.width0, self.start, self.start)  # (B, C0, s, s)
        return self.ups(torch.relu(self.bn0(h)))


class DCGANDiscriminator(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        c_in, size, _ = cfg.data_shape
        start, n_down = _n_up(size)
        widths = [cfg.d_width * 2 ** i for i in range(n_down)]  # e.g. [64, 128, 256]
        sn = nn.utils.parametrizations.spectral_norm if cfg.spectral_norm else (lambda m: m)
        use_bn = cfg.d_norm == "batch" and not cfg.spectral_norm
        layers: list[nn.Module] = [sn(nn.Conv2d(c_in, widths[0], 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        for i in range(n_down - 1):
            layers += [sn(nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1, bias=not use_bn))]
            layers += [nn.BatchNorm2d(widths[i + 1])] if use_bn else []
            layers += [nn.LeakyReLU(0.2, True)]
        self.body = nn.Sequential(*layers)
        feat = widths[-1] * start * start
        self.head = sn(nn.Linear(feat, 1))
        self.embed = sn(nn.Embedding(cfg.num_classes, feat)) if cfg.num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1] -> logits (B,)."""
        h = self.body(x).flatten(1)  # (B, C*s*s)
        out = self.head(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)  # projection discriminator
        return out


class MLPGenerator(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.shape = tuple(cfg.data_shape)
        n_out = 1
        for d in self.shape:
            n_out *= d
        hid = cfg.g_width
        self.embed = nn.Embedding(cfg.num_classes, cfg.z_dim) if cfg.num_classes else None
        z_in = cfg.z_dim * (2 if cfg.num_classes else 1)
        self.net = nn.Sequential(nn.Linear(z_in, hid), nn.ReLU(True), nn.Linear(hid, hid), nn.ReLU(True),
                                 nn.Linear(hid, n_out))
        self.image = cfg.is_image  # images squash to [-1, 1]; toy coordinates stay linear

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)
        out = self.net(z)
        if self.image:
            out = torch.tanh(out)
        return out.view(z.shape[0], *self.shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        n_in = 1
        for d in cfg.data_shape:
            n_in *= d
        hid = cfg.d_width
        self.mbstd = cfg.mbstd
        sn = nn.utils.parametrizations.spectral_norm if cfg.spectral_norm else (lambda m: m)
        self.body = nn.Sequential(sn(nn.Linear(n_in + int(cfg.mbstd), hid)), nn.LeakyReLU(0.2, True), nn.Dropout(cfg.dropout),
                                  sn(nn.Linear(hid, hid)), nn.LeakyReLU(0.2, True), nn.Dropout(cfg.dropout))
        self.head = sn(nn.Linear(hid, 1))
        self.embed = nn.Embedding(cfg.num_classes, hid) if cfg.num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = x.flatten(1)  # (B, D)
        if self.mbstd:  # one extra input: the batch's mean per-feature std, so D can reject a too-narrow G
            x = torch.cat([x, x.std(0, unbiased=False).mean().expand(x.shape[0], 1)], dim=1)
        h = self.body(x)  # (B, hid)
        out = self.head(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)
        return out


def init_weights(m: nn.Module) -> None:
    """Radford et al.: all weights from N(0, 0.02); BatchNorm scale from N(1, 0.02)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def build_generator(cfg: GANConfig) -> nn.Module:
    check_config(cfg)
    if cfg.arch == "dcgan":
        g = DCGANGenerator(cfg)
        g.apply(init_weights)
        return g
    return MLPGenerator(cfg)


def build_discriminator(cfg: GANConfig) -> nn.Module:
    check_config(cfg)
    if cfg.arch == "dcgan":
        d = DCGANDiscriminator(cfg)
        if not cfg.spectral_norm:
            d.apply(init_weights)
        return d
    return MLPDiscriminator(cfg)


class GANPair(nn.Module):
    """What a model file holds: ``generator`` and (training output) ``discriminator``; bundled files hold
    the generator only. Keys are ``generator.*`` / ``discriminator.*``."""

    def __init__(self, cfg: GANConfig, with_discriminator: bool = True):
        super().__init__()
        self.cfg = cfg
        self.generator = build_generator(cfg)
        self.discriminator = build_discriminator(cfg) if with_discriminator else None

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, y)
