"""APGD-CE (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", Algorithm 1): L-inf PGD on the cross-entropy with momentum and a step size that
halves itself at checkpoints, so no step size has to be tuned per model.

The conventions of :mod:`dlkit.vision.attacks` hold: pixels in [0, 1], the model owns the normalisation and
runs frozen in eval mode, ``eps`` in [0, 1] units. Per example the first adversarial point found is kept
(else the point of highest loss), as the authors' release does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dlkit.vision.attacks import frozen_eval, project_linf

RHO = 0.75  # condition 1: the loss rose in fewer than RHO of the steps since the last checkpoint
MOMENTUM = 0.75  # alpha in the paper


def checkpoints(steps: int) -> list[int]:
    """w_j = ceil(p_j N): p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 6)) for q in p if 0 < q <= 1})


def _loss_grad(model, x, y):
    x = x.detach().requires_grad_(True)
    logits = model(x).float()
    loss = F.cross_entropy(logits, y, reduction="none")  # (B,)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), logits.detach(), grad


def _once(model, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int):
    """One run of Algorithm 1 -> (adversarial or highest-loss points, which are adversarial)."""
    b = x.shape[0]
    view = (b, 1, 1, 1)
    t = 2 * torch.rand_like(x) - 1  # a random start on the box's surface, as the authors' release
    adv = (x + eps * t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(view)).clamp(0, 1)
    step = torch.full(view, 2 * eps, device=x.device)  # eta^(0) = 2 eps
    loss, logits, grad = _loss_grad(model, adv, y)
    found = logits.argmax(1) != y
    first_adv = torch.where(found.view(view), adv, x)
    best, best_loss, best_grad = adv.clone(), loss.clone(), grad.clone()
    prev_loss, prev = loss, adv
    rises = torch.zeros(b, device=x.device)
    last_best, reduced_last = best_loss.clone(), torch.ones(b, dtype=torch.bool, device=x.device)
    marks, last_mark = checkpoints(steps), 0
    for k in range(steps):
        z = project_linf(adv + step * grad.sign(), x, eps)
        if k == 0:
            new = z  # x^(1): a plain step
        else:
            new = project_linf(adv + MOMENTUM * (z - adv) + (1 - MOMENTUM) * (adv - prev), x, eps)
        prev, adv = adv, new
        loss, logits, grad = _loss_grad(model, adv, y)
        ok = logits.argmax(1) != y
        first_adv = torch.where((ok & ~found).view(view), adv, first_adv)
        found |= ok
        rises += (loss > prev_loss).float()
        prev_loss = loss
        better = loss > best_loss
        best = torch.where(better.view(view), adv, best)
        best_grad = torch.where(better.view(view), grad, best_grad)
        best_loss = torch.where(better, loss, best_loss)
        if k + 1 in marks:  # a checkpoint w_j
            span = k + 1 - last_mark
            cond1 = rises < RHO * span
            cond2 = ~reduced_last & (last_best >= best_loss)  # step kept and no better loss since w_{j-1}
            halve = cond1 | cond2
            step = torch.where(halve.view(view), step / 2, step)
            adv = torch.where(halve.view(view), best, adv)  # restart from the best point
            grad = torch.where(halve.view(view), best_grad, grad)
            reduced_last, last_best, rises, last_mark = halve, best_loss.clone(), torch.zeros_like(rises), k + 1
    return torch.where(found.view(view), first_adv, best).detach(), found


def apgd_ce(model, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 100, restarts: int = 1) -> torch.Tensor:
    """APGD-CE with ``steps`` iterations (the paper's N = 100); ``restarts`` further runs attack only the
    examples not yet fooled. Returns (B, C, H, W) adversarial images in the eps box around ``x``."""
    with frozen_eval(model):
        out = x.clone()
        todo = torch.arange(x.shape[0], device=x.device)
        for _ in range(max(1, restarts)):
            adv, ok = _once(model, x[todo], y[todo], eps, steps)
            out[todo] = adv
            todo = todo[~ok]
            if todo.numel() == 0:
                break
        return out.detach()
