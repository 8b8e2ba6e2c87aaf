"""Video frame predictors and the clip discriminator: pure modules, a config dataclass, named presets.

Both predictors map ``t_in`` context frames (B, T_in, C, H, W) in [0, 1] to ``t_out`` predicted frames
(B, T_out, C, H, W) in [0, 1] (a sigmoid read-out).

* ``convlstm``: the encoder-forecaster of Shi et al. 2015 ("Convolutional LSTM Network"). Frames are cut into
  ``patch`` x ``patch`` blocks (space-to-depth, as OpenSTL's re-implementation does) and read by a stack of
  ConvLSTM cells; a second stack, started from the encoder's states, forecasts. Departures, both OpenSTL's
  too: no peephole terms, and each forecaster step reads the previous predicted frame (Shi et al.'s forecaster
  reads nothing); the read-out is a 1x1 convolution over all forecaster layers' hidden states, as in the paper.
* ``simvp``: SimVP (Gao et al. 2022): a per-frame convolutional encoder (strides 1-2-1-2), a translator that
  mixes time by stacking all frames' features as channels (here ConvMixer-style blocks: depthwise k x k and
  pointwise convolutions, the "SimVP+ConvMixer" variant of OpenSTL), and a per-frame decoder with a skip from
  the encoder's first layer. Departure: the skip comes from the *last* context frame for every output frame
  (SimVP pairs input frame i with output frame i, which needs T_in = T_out).
* :class:`ClipDiscriminator`: for the adversarial loss (Mathieu, Couprie and LeCun 2016 judge whole clips):
  the (context, future) clip with time stacked as channels, strided convolutions with spectral normalisation,
  one logit per clip (B,).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = ("convlstm", "simvp")
READOUT_BIAS = -3.0  # sigmoid(-3) = 0.047: start near a dark frame (Moving MNIST is ~95% black), not at grey 0.5


@dataclass
class FramesConfig:
    arch: str = "simvp"
    channels: int = 1  # 1 grey, 3 colour
    size: int = 64  # frame side (H = W); a multiple of 4 (simvp) or of ``patch`` (convlstm)
    t_in: int = 10
    t_out: int = 10
    width: int = 16  # convlstm: hidden channels per cell; simvp: encoder/decoder channels
    depth: int = 4  # convlstm: cells per stack; simvp: translator blocks
    kernel: int = 3  # convlstm: cell kernel; simvp: translator depthwise kernel
    patch: int = 4  # space-to-depth block before the network (pixel_unshuffle; 1: none)
    t_width: int = 128  # simvp: translator channels

    def to_dict(self) -> dict:
        return asdict(self)


# CPU presets: ~1-3 GFLOPs per 20-frame sequence forward (docs/frames.md has the measured figures);
# the GPU ones follow OpenSTL's Moving MNIST settings (ConvLSTM 4 x 128, k 5; SimVP 64 / 512, 8 blocks).
PRESETS = {
    "simvp-cpu": FramesConfig("simvp", width=32, depth=4, kernel=7, patch=2, t_width=128),
    "convlstm-cpu": FramesConfig("convlstm", width=48, depth=2, kernel=3, patch=4),
    "simvp": FramesConfig("simvp", width=64, depth=8, kernel=7, patch=1, t_width=512),
    "convlstm": FramesConfig("convlstm", width=128, depth=4, kernel=5, patch=4),
}


def check_config(cfg: FramesConfig) -> None:
    """ValueError with one sentence for a config no model can be built from."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown arch '{cfg.arch}' (expected {' or '.join(ARCHS)})")
    if cfg.channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {cfg.channels}")
    if min(cfg.t_in, cfg.t_out, cfg.width, cfg.depth, cfg.kernel, cfg.patch, cfg.t_width) < 1:
        raise ValueError("frame counts and sizes must be positive")
    if cfg.kernel % 2 == 0:
        raise ValueError(f"kernel must be odd, not {cfg.kernel}")
    step = cfg.patch if cfg.arch == "convlstm" else 4 * cfg.patch
    if cfg.size < step or cfg.size % step:
        raise ValueError(f"frame size {cfg.size} must be a multiple of {step} for {cfg.arch}")


# ------------------------------------------------------------------ ConvLSTM
class ConvLSTMCell(nn.Module):
    """i, f, g, o gates from one convolution over [x, h] (Shi et al. 2015, eq. 3, without peepholes)."""

    def __init__(self, c_in: int, hidden: int, kernel: int):
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(c_in + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x, state):
        h, c = state  # (B, hid, h, w) each
        i, f, g, o = self.conv(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTMNet(nn.Module):
    def __init__(self, cfg: FramesConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels * cfg.patch ** 2
        self.encoder = nn.ModuleList(ConvLSTMCell(c if i == 0 else cfg.width, cfg.width, cfg.kernel)
                                     for i in range(cfg.depth))
        self.forecaster = nn.ModuleList(ConvLSTMCell(c if i == 0 else cfg.width, cfg.width, cfg.kernel)
                                        for i in range(cfg.depth))
        self.readout = nn.Conv2d(cfg.width * cfg.depth, c, 1)
        nn.init.constant_(self.readout.bias, READOUT_BIAS)

    @staticmethod
    def _run(cells, x, states):
        for i, cell in enumerate(cells):
            states[i] = cell(x, states[i])
            x = states[i][0]
        return states

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        B, T, C, H, W = frames.shape
        x = F.pixel_unshuffle(frames.reshape(B * T, C, H, W), cfg.patch)  # (B*T, C*p*p, H/p, W/p)
        x = x.reshape(B, T, *x.shape[1:])
        zero = x.new_zeros(B, cfg.width, *x.shape[-2:])
        states = [(zero, zero) for _ in range(cfg.depth)]
        for t in range(T):
            states = self._run(self.encoder, x[:, t], states)
        prev, outs = x[:, -1], []
        for _ in range(cfg.t_out):
            states = self._run(self.forecaster, prev, states)
            logits = self.readout(torch.cat([h for h, _ in states], dim=1))  # (B, C*p*p, H/p, W/p)
            prev = torch.sigmoid(logits)
            outs.append(prev)
        y = torch.stack(outs, dim=1).reshape(B * cfg.t_out, -1, H // cfg.patch, W // cfg.patch)
        return F.pixel_shuffle(y, cfg.patch).reshape(B, cfg.t_out, C, H, W)


# ------------------------------------------------------------------ SimVP
def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv, GroupNorm, SiLU (OpenSTL's BasicConv2d)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(2 if c_out % 2 == 0 else 1, c_out), nn.SiLU())


def _up(c: int) -> nn.Sequential:
    """x2 upsampling by a 3x3 conv to 4c channels and a pixel shuffle, GroupNorm, SiLU."""
    return nn.Sequential(nn.Conv2d(c, 4 * c, 3, 1, 1), nn.PixelShuffle(2), nn.GroupNorm(2 if c % 2 == 0 else 1, c), nn.SiLU())


class MixerBlock(nn.Module):
    """ConvMixer (Trockman and Kolter 2022): x + act(norm(depthwise(x))), then act(norm(pointwise(x)))."""

    def __init__(self, c: int, kernel: int):
        super().__init__()
        self.spatial = nn.Sequential(nn.Conv2d(c, c, kernel, padding=kernel // 2, groups=c), nn.GELU(), nn.GroupNorm(1, c))
        self.channel = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU(), nn.GroupNorm(1, c))

    def forward(self, x):
        x = x + self.spatial(x)
        return self.channel(x)


class SimVP(nn.Module):
    def __init__(self, cfg: FramesConfig):
        super().__init__()
        self.cfg = cfg
        w, c = cfg.width, cfg.channels * cfg.patch ** 2
        self.enc = nn.ModuleList([_conv(c, w), _conv(w, w, 2), _conv(w, w), _conv(w, w, 2)])
        self.proj_in = nn.Conv2d(cfg.t_in * w, cfg.t_width, 1)
        self.blocks = nn.Sequential(*[MixerBlock(cfg.t_width, cfg.kernel) for _ in range(cfg.depth)])
        self.proj_out = nn.Conv2d(cfg.t_width, cfg.t_out * w, 1)
        self.dec = nn.ModuleList([_conv(w, w), _up(w), _conv(w, w), _up(w)])
        self.readout = nn.Conv2d(2 * w, c, 1)
        nn.init.constant_(self.readout.bias, READOUT_BIAS)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        B, T, C, H, W = frames.shape
        x = F.pixel_unshuffle(frames.reshape(B * T, C, H, W), cfg.patch)  # (B*T, C*p*p, H/p, W/p)
        skip = None
        for i, layer in enumerate(self.enc):
            x = layer(x)
            if i == 0:
                skip = x  # (B*T, w, H/p, W/p)
        h, w = x.shape[-2:]
        z = self.proj_in(x.reshape(B, T * cfg.width, h, w))  # (B, t_width, H/4, W/4): time as channels
        z = self.proj_out(self.blocks(z)).reshape(B * cfg.t_out, cfg.width, h, w)
        for layer in self.dec:
            z = layer(z)  # -> (B*T_out, w, H, W)
        hp, wp = skip.shape[-2:]  # H/p, W/p
        last = skip.reshape(B, T, cfg.width, hp, wp)[:, -1]  # (B, w, H/p, W/p)
        last = last.unsqueeze(1).expand(B, cfg.t_out, cfg.width, hp, wp).reshape(B * cfg.t_out, cfg.width, hp, wp)
        y = torch.sigmoid(self.readout(torch.cat([z, last], dim=1)))  # (B*T_out, C*p*p, H/p, W/p)
        return F.pixel_shuffle(y, cfg.patch).reshape(B, cfg.t_out, C, H, W)


# ------------------------------------------------------------------ discriminator
class ClipDiscriminator(nn.Module):
    """(context, future) clips (B, T, C, H, W) -> one logit per clip (B,)."""

    def __init__(self, frames: int, channels: int = 1, width: int = 32):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        c, layers = frames * channels, []
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            layers += [sn(nn.Conv2d(c, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c = c_out
        self.features = nn.Sequential(*layers)
        self.head = sn(nn.Conv2d(c, 1, 3, 1, 1))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        B, T, C, H, W = clip.shape
        x = self.features(clip.reshape(B, T * C, H, W) * 2 - 1)  # [-1, 1] in
        return self.head(x).mean(dim=(1, 2, 3))  # (B,): the mean of a patch map (Isola et al. 2017)


def build_model(cfg: FramesConfig) -> nn.Module:
    check_config(cfg)
    return ConvLSTMNet(cfg) if cfg.arch == "convlstm" else SimVP(cfg)


def preset(name: str, **over) -> FramesConfig:
    """A preset with some fields replaced (``None`` values keep the preset's)."""
    return replace(PRESETS[name], **{k: v for k, v in over.items() if v is not None})
