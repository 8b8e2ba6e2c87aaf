"""One optimizer step (AMP, accumulation, clipping) and learning-rate schedules."""

from __future__ import annotations

import math

import torch


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    params=None,
    clip: float = 0.0,
    step: bool = True,
    update_scaler: bool = True,
) -> float | None:
    """Backward ``loss``; when ``step`` is true also unscale, clip, step, update the scaler and zero grads.

    With gradient accumulation call it with ``step=False`` for all micro-batches but the last (and scale
    the loss by 1/accum yourself). A disabled scaler (fp32/bf16) is a no-op, so there is one code path.
    With two optimizers per iteration (GANs, SRGAN) pass ``update_scaler=False`` to each and call
    ``scaler.update()`` once after the last one (PyTorch's multi-optimizer AMP recipe).
    Returns the gradient norm before clipping when it was computed.
    """
    scaler.scale(loss).backward()
    if not step:
        return None
    norm = None
    if clip and clip > 0:
        scaler.unscale_(optimizer)
        if params is None:
            params = [p for g in optimizer.param_groups for p in g["params"]]
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    scaler.step(optimizer)
    if update_scaler:
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return norm


def warmup_cosine(step: int, base_lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """Linear warmup for ``warmup`` steps, then cosine decay to ``min_lr`` at ``total`` (nanoGPT's schedule)."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def inverse_sqrt(step: int, base_lr: float, warmup: int) -> float:
    """Vaswani et al. 2017: linear warmup, then decay with 1/sqrt(step); peaks at base_lr."""
    step = step + 1
    if step < warmup:
        return base_lr * step / warmup
    return base_lr * math.sqrt(warmup / step)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95), fused: bool = False):
    """AdamW with decay on matrices only (not on biases, norms or embeddings' 1-d params)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def check_finite(loss: float, step: int, keep: str | None = None) -> None:
    """Stop training with one line when the loss is NaN or infinite (e.g. ``--lr 1e6``).

    Call it at the logging interval with the already-synchronised float. ``keep`` names what is kept
    (the last good checkpoint) so the message says where the user's work is.
    """
    if math.isfinite(loss):
        return
    from dlkit.core.errors import TrainingDiverged

    where = f"; the last good model is kept in {keep}" if keep else ""
    raise TrainingDiverged(f"training diverged: the loss became {loss} at step {step} (try a lower --lr){where}")
