"""SRResNet / SRGAN (Ledig et al. 2017, "Photo-realistic single image super-resolution using a GAN").

Generator: 9x9 conv + PReLU, ``n_blocks`` residual blocks (conv-BN-PReLU-conv-BN + skip), conv-BN + global
skip, ``log2(scale)`` sub-pixel x2 stages (one x3 stage for scale 3), 9x9 conv to RGB. ``bn=False`` gives the
EDSR-style variant (Lim et al. 2017: no BatchNorm, residual scaling), which trains faster on small batches.
Discriminator: the paper's VGG-style stack of strided convs with LeakyReLU, then a dense head.
Images are RGB in [0, 1]; the generator predicts the HR image directly (no bicubic skip).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

SCALES = (2, 3, 4)


@dataclass
class SRConfig:
    scale: int = 4
    n_blocks: int = 16
    channels: int = 64
    bn: bool = True  # False: EDSR-style blocks (no BatchNorm)
    res_scale: float = 1.0  # EDSR's residual scaling (0.1 for very wide models)
    kernel: int = 9  # head/tail conv size: 9 in the paper, 3 in EDSR (about 40% cheaper at x4 on a CPU)
    rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)  # EDSR's MeanShift (DIV2K mean)

    def to_dict(self) -> dict:
        return asdict(self)


# Named sizes; "srresnet" is the paper's generator.
PRESETS: dict[str, SRConfig] = {
    "srresnet": SRConfig(n_blocks=16, channels=64, bn=True),
    "edsr-baseline": SRConfig(n_blocks=16, channels=64, bn=False, kernel=3),
    "small": SRConfig(n_blocks=8, channels=64, bn=False, kernel=3),
    "tiny": SRConfig(n_blocks=2, channels=16, bn=False, kernel=3),
}


class ResidualBlock(nn.Module):
    def __init__(self, c: int, bn: bool, res_scale: float):
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(c)) if bn else (lambda: nn.Identity())
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), norm(), nn.PReLU(c) if bn else nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1), norm())
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class Upsampler(nn.Sequential):
    """Sub-pixel convolution (Shi et al. 2016): conv to r^2 C channels, PixelShuffle(r), PReLU."""

    def __init__(self, c: int, scale: int):
        steps = [2] * (scale.bit_length() - 1) if scale in (2, 4) else [3]
        layers: list[nn.Module] = []
        for r in steps:
            layers += [nn.Conv2d(c, c * r * r, 3, padding=1), nn.PixelShuffle(r), nn.PReLU(c)]
        super().__init__(*layers)


class SRResNet(nn.Module):
    def __init__(self, cfg: SRConfig):
        super().__init__()
        if cfg.scale not in SCALES:
            raise ValueError(f"scale {cfg.scale} not supported; expected one of {SCALES}")
        self.cfg = cfg
        c = cfg.channels
        self.head = nn.Sequential(nn.Conv2d(3, c, cfg.kernel, padding=cfg.kernel // 2), nn.PReLU(c))
        self.body = nn.Sequential(*[ResidualBlock(c, cfg.bn, cfg.res_scale) for _ in range(cfg.n_blocks)])
        self.body_tail = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c) if cfg.bn else nn.Identity())
        self.up = Upsampler(c, cfg.scale)
        self.tail = nn.Conv2d(c, 3, cfg.kernel, padding=cfg.kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) in [0, 1] -> (B, 3, h*scale, w*scale), unclamped."""
        mean = x.new_tensor(self.cfg.rgb_mean).view(1, 3, 1, 1)
        feat = self.head(x - mean)  # (B, C, h, w)
        feat = feat + self.body_tail(self.body(feat))  # global skip
        return self.tail(self.up(feat)) + mean  # (B, 3, sh, sw)


class Discriminator(nn.Module):
    """Ledig et al.'s discriminator: 8 convs (64..512 ch, stride 2 every other), LeakyReLU(0.2), dense 1024, logit.

    Adaptive pooling before the dense head lets it take any patch size (the paper uses 96x96)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        c = channels
        spec = [(3, c, 1, False), (c, c, 2, True), (c, 2 * c, 1, True), (2 * c, 2 * c, 2, True),
                (2 * c, 4 * c, 1, True), (4 * c, 4 * c, 2, True), (4 * c, 8 * c, 1, True), (8 * c, 8 * c, 2, True)]
        layers: list[nn.Module] = []
        for cin, cout, stride, bn in spec:
            layers += [nn.Conv2d(cin, cout, 3, stride, 1), *( [nn.BatchNorm2d(cout)] if bn else []), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(6), nn.Flatten(), nn.Linear(8 * c * 36, 1024),
                                  nn.LeakyReLU(0.2, True), nn.Linear(1024, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B,) logits (real > 0)."""
        return self.head(self.features(x)).squeeze(1)


def build_model(cfg: SRConfig) -> SRResNet:
    return SRResNet(cfg)


def config_from_dict(d: dict) -> SRConfig:
    known = {k: d[k] for k in SRConfig.__dataclass_fields__ if k in d}
    if "rgb_mean" in known:
        known["rgb_mean"] = tuple(known["rgb_mean"])
    return SRConfig(**known)
