"""Per-frame quality of predicted video, measured the way the Moving MNIST literature reports it.

All functions take predictions and truth (B, T, C, H, W) in [0, 1] and return one value per sequence and
frame (B, T); :class:`Scores` averages them over sequences, per predicted frame and over all frames.

* ``mse``, ``mae``: the squared / absolute error *summed* over a frame's pixels, then averaged over frames
  and sequences (OpenSTL's MSE/MAE, the figures of PredRNN, SimVP and OpenSTL: ConvLSTM 29.8, SimVP 32.2).
* ``ssim``: scikit-image's ``structural_similarity`` (7x7 uniform window, sample covariance, K1 0.01,
  K2 0.03, data range 1, the valid region only), colour channels averaged; a test checks it against skimage.
* ``psnr``: 10 log10(1 / mean squared error) of each frame, averaged over frames (capped at 100 dB).
* ``sharp_diff``: Mathieu, Couprie and LeCun 2016, eq. 13: 10 log10(1 / mean |(dxY + dyY) - (dxY^ + dyY^)|),
  with dx, dy absolute neighbour differences: higher = edges closer to the truth's.
* ``grad``: the mean gradient magnitude of the prediction itself, x100 (the truth's is shown as its own row):
  a blurred prediction has weaker edges than the truth, a sharp one about the truth's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

METRICS = ("mse", "mae", "ssim", "psnr", "sharp_diff", "grad")
HIGHER_IS_BETTER = {"mse": False, "mae": False, "ssim": True, "psnr": True, "sharp_diff": True, "grad": None}


def _frames(x: torch.Tensor) -> torch.Tensor:
    return x.float().flatten(0, 1)  # (B*T, C, H, W)


def mse(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return ((pred.float() - truth.float()) ** 2).sum(dim=(2, 3, 4))


def mae(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return (pred.float() - truth.float()).abs().sum(dim=(2, 3, 4))


def psnr(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    err = ((pred.float() - truth.float()) ** 2).mean(dim=(2, 3, 4)).clamp_min(1e-10)
    return (10 * torch.log10(1.0 / err)).clamp_max(100.0)


def ssim(pred: torch.Tensor, truth: torch.Tensor, win: int = 7) -> torch.Tensor:
    """skimage.metrics.structural_similarity(data_range=1) per frame, channels averaged."""
    B, T = pred.shape[:2]
    x, y = _frames(pred).double(), _frames(truth).double()  # skimage computes in float64
    mean = lambda a: F.avg_pool2d(a, win, stride=1)  # noqa: E731 - the valid region: skimage crops (win-1)/2
    n = win * win
    cov = n / (n - 1)  # sample covariance
    ux, uy = mean(x), mean(y)
    vx, vy, vxy = cov * (mean(x * x) - ux * ux), cov * (mean(y * y) - uy * uy), cov * (mean(x * y) - ux * uy)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).float().reshape(B, T)


def _abs_grads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|x[i+1, j] - x[i, j]| and |x[i, j+1] - x[i, j]| on the common (H-1, W-1) grid."""
    return (x[..., 1:, :-1] - x[..., :-1, :-1]).abs(), (x[..., :-1, 1:] - x[..., :-1, :-1]).abs()


def sharp_diff(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    (py, px), (ty, tx) = _abs_grads(pred.float()), _abs_grads(truth.float())
    err = ((ty + tx) - (py + px)).abs().mean(dim=(2, 3, 4)).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / err)


def grad(pred: torch.Tensor, truth: torch.Tensor | None = None) -> torch.Tensor:
    gy, gx = _abs_grads(pred.float())
    return 100 * torch.sqrt(gy ** 2 + gx ** 2).mean(dim=(2, 3, 4))


FUNCTIONS = {"mse": mse, "mae": mae, "ssim": ssim, "psnr": psnr, "sharp_diff": sharp_diff, "grad": grad}


def measure(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every metric, (B, T) each."""
    return {k: f(pred, truth) for k, f in FUNCTIONS.items()}


def copy_last(context: torch.Tensor, t_out: int) -> torch.Tensor:
    """Baseline: the last context frame, repeated (B, T_out, C, H, W)."""
    return context[:, -1:].expand(-1, t_out, -1, -1, -1)


def mean_frame(context: torch.Tensor, t_out: int) -> torch.Tensor:
    """Baseline: the mean of the context frames, repeated (what an MSE model predicts when it knows no motion)."""
    return context.float().mean(dim=1, keepdim=True).expand(-1, t_out, -1, -1, -1)


class Scores:
    """Running sums of each metric per predicted frame, for one predictor."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        for k, v in measure(pred, truth).items():
            s = v.double().sum(dim=0).cpu()  # (T,)
            self.sums[k] = self.sums[k] + s if k in self.sums else s
        self.count += pred.shape[0]

    def per_frame(self) -> dict[str, list[float]]:
        return {k: (v / max(1, self.count)).tolist() for k, v in self.sums.items()}

    def mean(self) -> dict[str, float]:
        return {k: float(v.mean() / max(1, self.count)) for k, v in self.sums.items()}
