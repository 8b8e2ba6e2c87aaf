"""Training objectives of frame prediction: pixel losses and the gradient difference loss.

The adversarial objective (Mathieu, Couprie and LeCun 2016, eq. 9 without their multi-scale pyramid) is
``recon + gdl_weight * GDL + adv_weight * L_adv(D(context, prediction))``, with L_adv one of the GAN games of
:mod:`dlkit.nets.gan_losses` (non-saturating or hinge).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("mse", "l1", "adversarial")
GAMES = ("non-saturating", "hinge")


def reconstruction(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared (``mse``) or absolute (``l1``) error over all pixels."""
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    raise ValueError(f"unknown reconstruction loss '{kind}' (expected mse or l1)")


def gradient_difference(pred: torch.Tensor, target: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Mathieu et al. 2016, eq. 5: | |dY| - |dY_hat| |^alpha along rows and columns, averaged over pixels.

    Penalises predictions whose edges are weaker (blurred) or stronger than the truth's; (..., H, W) inputs."""
    def grads(x):
        return (x[..., 1:, :] - x[..., :-1, :]).abs(), (x[..., :, 1:] - x[..., :, :-1]).abs()

    (py, px), (ty, tx) = grads(pred), grads(target)
    return ((ty - py).abs() ** alpha).mean() + ((tx - px).abs() ** alpha).mean()
