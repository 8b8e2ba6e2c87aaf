"""Adversarial attacks as pure functions: (model, images in [0, 1], labels) -> adversarial images in [0, 1].

Conventions, for every attack:

- ``model`` maps pixels in [0, 1] (B, C, H, W) to logits (B, K) and owns the normalisation. Attacking the
  normalised tensor instead (then clipping it to [0, 1]) is the most common mistake in this field: the budget
  ``eps`` is then measured in the wrong units and the images are not valid images.
- The model runs in eval mode with its parameters frozen while an attack runs (BatchNorm uses its running
  statistics, dropout is off; no parameter gradients are computed); the previous state is restored afterwards.
- ``eps`` is in [0, 1] units (8/255, not 8) and bounds the L-inf norm of the perturbation (the L2 norm for
  ``pgd_l2``); results are always projected back into the eps ball and into [0, 1].
- ``target`` (B,) asks for a targeted attack (the loss towards the target is minimised); ``None`` is untargeted.
- Losses are summed over the batch, so each example's gradient does not depend on who else is in the batch.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

MINIMAL = ("deepfool", "cw")  # minimal-perturbation attacks: eps only clips their result


def kurakin_steps(eps: float) -> int:
    """Kurakin et al. 2016 (BIM / iterative least-likely): min(eps + 4, 1.25 eps) iterations, eps in 0-255 units."""
    e = eps * 255
    return max(1, int(math.floor(min(e + 4, 1.25 * e) + 1e-6)))


@dataclass
class AttackConfig:
    """One attack and its settings; ``None`` means the method's published default."""

    method: str = "fgsm"
    eps: float = 8 / 255
    steps: int | None = None  # bim/ill: Kurakin's min(eps+4, 1.25 eps); pgd/mifgsm 10; deepfool 50; cw 100
    step_size: float | None = None  # bim/ill 1/255; pgd 2.5 eps/steps (Madry et al.); mifgsm eps/steps (Dong et al.)
    restarts: int = 1  # pgd, pgd-l2: keep the first restart that succeeds, else the one with the highest loss
    random_start: bool = True  # pgd, pgd-l2
    decay: float = 1.0  # mifgsm momentum
    overshoot: float = 0.02  # deepfool
    candidates: int = 10  # deepfool: the classes it looks at (the original's 10)
    cw_c: float = 1.0  # cw: weight of the misclassification term (initial value of the binary search)
    cw_kappa: float = 0.0  # cw: confidence margin
    cw_lr: float = 0.01  # cw: Adam learning rate in tanh space
    cw_search: int = 1  # cw: binary-search steps over c (1 = fixed c, as torchattacks)
    name: str | None = None  # how tables call it (e.g. "pgd-40x10"); default: the method

    def __post_init__(self):
        self.validate()

    @property
    def label(self) -> str:
        return self.name or self.method

    def validate(self) -> None:
        """One line (a UsageError naming the option) for a setting no attack can use: a non-finite or
        negative number, or a count beyond what any published setting needs."""
        from dlkit.core.errors import UsageError

        for field_name in ("eps", "step_size", "decay", "overshoot", "cw_c", "cw_kappa", "cw_lr"):
            v = getattr(self, field_name)
            if v is None:
                continue
            option = "--" + field_name.replace("_", "-")
            if not math.isfinite(v):
                raise UsageError(f"{option} {v}: not a finite number")
            if v < 0:
                raise UsageError(f"{option} {v:g}: must not be negative")
        if self.cw_lr <= 0:
            raise UsageError(f"--cw-lr {self.cw_lr:g}: must be positive")
        for field_name, top in (("steps", 100_000), ("restarts", 1000), ("candidates", 1000), ("cw_search", 100)):
            v = getattr(self, field_name)
            if v is not None and not 1 <= v <= top:
                raise UsageError(f"--{field_name.replace('_', '-')} {v}: must be 1-{top}")


@contextmanager
def frozen_eval(model: nn.Module):
    """Eval mode and no parameter gradients for the duration of an attack; restores both afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def project_linf(adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Into the L-inf ball of radius eps around x, then into [0, 1]."""
    return torch.min(torch.max(adv, x - eps), x + eps).clamp_(0, 1)


def project_l2(adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Into the L2 ball of radius eps around x, then into [0, 1] (clipping only shortens the perturbation)."""
    delta = adv - x
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    delta = delta * torch.clamp(eps / norms, max=1.0)
    return (x + delta).clamp_(0, 1)


def loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None):
    """(d loss / d x, logits): cross-entropy with the true label, or minus cross-entropy with the target."""
    x = x.detach().requires_grad_(True)
    logits = model(x).float()
    if target is None:
        loss = F.cross_entropy(logits, y, reduction="sum")
    else:
        loss = -F.cross_entropy(logits, target, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad, logits.detach()


def fgsm(model, x, y, eps, target=None):
    """Goodfellow et al. 2014: x + eps sign(grad) (targeted: a step down the target's loss)."""
    with frozen_eval(model):
        grad, _ = loss_grad(model, x, y, target)
        return (x + eps * grad.sign()).clamp(0, 1).detach()


def _iterate_linf(model, x, y, eps, steps, alpha, target, start, decay=None):
    """Projected sign-gradient steps (BIM, ILL, PGD, MI-FGSM share this loop)."""
    adv = start
    momentum = torch.zeros_like(x) if decay is not None else None
    for _ in range(steps):
        grad, _ = loss_grad(model, adv, y, target)
        if momentum is not None:  # Dong et al. 2018: gradients normalised by their mean absolute value
            grad = grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
            momentum = decay * momentum + grad
            grad = momentum
        adv = project_linf(adv + alpha * grad.sign(), x, eps)
    return adv.detach()


def bim(model, x, y, eps, target=None, steps=None, step_size=None):
    """Kurakin et al. 2016, basic iterative method: steps of 1/255, min(eps+4, 1.25 eps) of them, no random start."""
    steps = steps or kurakin_steps(eps)
    alpha = step_size if step_size is not None else 1 / 255
    with frozen_eval(model):
        return _iterate_linf(model, x, y, eps, steps, alpha, target, x.clone())


def ill(model, x, y, eps, steps=None, step_size=None):
    """Kurakin et al. 2016, iterative least-likely class: BIM towards the class the clean image scores lowest."""
    with frozen_eval(model), torch.no_grad():
        least = model(x).argmin(dim=1)
    return bim(model, x, y, eps, target=least, steps=steps, step_size=step_size)


def _succeeded(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    pred = logits.argmax(dim=1)
    return pred == target if target is not None else pred != y


def _restarts(model, x, y, target, restarts, run_once):
    """Run an attack ``restarts`` times; per example keep the first success, else the highest-loss result.
    ``run_once(idx)`` attacks the examples ``idx``: each restart attacks only those no earlier one fooled."""
    todo = torch.arange(x.shape[0], device=x.device)
    best = best_ok = best_loss = None
    for _ in range(max(1, restarts)):
        adv = run_once(todo)
        t = target[todo] if target is not None else None
        with torch.no_grad():
            logits = model(adv).float()
        ok = _succeeded(logits, y[todo], t)
        ce = F.cross_entropy(logits, y[todo] if t is None else t, reduction="none")
        loss = ce if t is None else -ce
        if best is None:
            best, best_ok, best_loss = adv.clone(), ok.clone(), loss.clone()
        else:  # none of `todo` has succeeded before
            take = ok | (loss > best_loss[todo])
            best[todo[take]] = adv[take]
            best_loss[todo[take]] = loss[take]
            best_ok[todo] = ok
        todo = todo[~best_ok[todo]]
        if todo.numel() == 0:
            break
    return best


def _pick(t: torch.Tensor | None, idx: torch.Tensor | None):
    return t if t is None or idx is None else t[idx]


def pgd(model, x, y, eps, target=None, steps=None, step_size=None, restarts=1, random_start=True):
    """Madry et al. 2018, L-inf PGD: uniform random start in the eps box, sign steps, projection."""
    steps = steps or 10
    alpha = step_size if step_size is not None else 2.5 * eps / steps

    def once(idx=None):
        xs = _pick(x, idx)
        start = xs.clone()
        if random_start:
            start = (xs + torch.empty_like(xs).uniform_(-eps, eps)).clamp_(0, 1)
        return _iterate_linf(model, xs, _pick(y, idx), eps, steps, alpha, _pick(target, idx), start)

    with frozen_eval(model):
        return _restarts(model, x, y, target, restarts, once) if restarts > 1 else once()


def pgd_l2(model, x, y, eps, target=None, steps=None, step_size=None, restarts=1, random_start=True):
    """Madry et al. 2018, L2 PGD: random start in the eps ball, steps along the normalised gradient, projection."""
    steps = steps or 10
    alpha = step_size if step_size is not None else 2.5 * eps / steps

    def once(idx=None):
        xs, ys, ts = _pick(x, idx), _pick(y, idx), _pick(target, idx)
        b = xs.shape[0]
        adv = xs.clone()
        if random_start:
            d = torch.randn_like(xs)
            d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(b, 1, 1, 1)
            r = torch.rand(b, 1, 1, 1, device=x.device) ** (1.0 / x[0].numel())  # uniform in the ball
            adv = (xs + eps * r * d).clamp_(0, 1)
        for _ in range(steps):
            grad, _ = loss_grad(model, adv, ys, ts)
            grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(b, 1, 1, 1)
            adv = project_l2(adv + alpha * grad, xs, eps)
        return adv.detach()

    with frozen_eval(model):
        return _restarts(model, x, y, target, restarts, once) if restarts > 1 else once()


def mifgsm(model, x, y, eps, target=None, steps=None, step_size=None, decay=1.0):
    """Dong et al. 2018, momentum iterative FGSM: T = 10 steps of eps / T, momentum decay 1.0."""
    steps = steps or 10
    alpha = step_size if step_size is not None else eps / steps
    with frozen_eval(model):
        return _iterate_linf(model, x, y, eps, steps, alpha, target, x.clone(), decay=decay)


def deepfool(model, x, steps=None, overshoot=0.02, candidates=10):
    """Moosavi-Dezfooli et al. 2016, batched: step to the nearest linearised decision boundary among the
    ``candidates`` top classes until the label flips; the total step is scaled by (1 + overshoot). L2, no budget."""
    steps = steps or 50
    with frozen_eval(model):
        with torch.no_grad():
            logits0 = model(x).float()
        k = min(candidates, logits0.shape[1])
        order = logits0.argsort(dim=1, descending=True)[:, :k]  # (B, k); column 0 is the clean label
        r_tot = torch.zeros_like(x)
        active = torch.arange(x.shape[0], device=x.device)
        for _ in range(steps):
            xi = (x[active] + (1 + overshoot) * r_tot[active]).clamp(0, 1).requires_grad_(True)
            logits = model(xi).float()
            cand = order[active]
            still = logits.argmax(dim=1) == cand[:, 0]
            if not bool(still.any()):
                break
            f = logits.gather(1, cand)  # (b, k)
            grads = [torch.autograd.grad(f[:, j].sum(), xi, retain_graph=j < k - 1)[0] for j in range(k)]
            best_d = torch.full((len(active),), float("inf"), device=x.device)
            best_w = torch.zeros_like(xi)
            for j in range(1, k):
                w = grads[j] - grads[0]
                fk = (f[:, j] - f[:, 0]).detach()
                d = fk.abs() / w.flatten(1).norm(dim=1).clamp_min(1e-8)
                closer = d < best_d
                best_d = torch.where(closer, d, best_d)
                best_w = torch.where(closer.view(-1, 1, 1, 1), w, best_w)
            w_norm = best_w.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1, 1)
            r_i = (best_d.view(-1, 1, 1, 1) + 1e-4) * best_w / w_norm
            upd = active[still]
            r_tot[upd] += r_i[still].detach()
            active = upd
        return (x + (1 + overshoot) * r_tot).clamp(0, 1).detach()


def cw(model, x, y, target=None, steps=None, c=1.0, kappa=0.0, lr=0.01, search=1):
    """Carlini & Wagner 2017, L2: Adam on w with x' = (tanh w + 1) / 2, minimising ||x' - x||^2 + c f(x'),
    f = max(Z_y - max_{i != y} Z_i, -kappa) (targeted: max(max_{i != t} Z_i - Z_t, -kappa)). Keeps the smallest
    successful x' per example (the clean image where none succeeds); ``search`` > 1 binary-searches c."""
    steps = steps or 100
    b = x.shape[0]
    lab = y if target is None else target
    w0 = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach()
    best = x.clone()
    best_l2 = torch.full((b,), float("inf"), device=x.device)
    cs = torch.full((b,), float(c), device=x.device)
    lo, hi = torch.zeros_like(cs), torch.full_like(cs, 1e10)
    with frozen_eval(model):
        for _ in range(max(1, search)):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=lr)
            found = torch.zeros(b, dtype=torch.bool, device=x.device)
            for _ in range(steps):
                adv = (torch.tanh(w) + 1) / 2
                l2 = (adv - x).flatten(1).pow(2).sum(dim=1)
                logits = model(adv).float()
                onehot = F.one_hot(lab, logits.shape[1]).bool()
                real = logits[onehot]
                other = logits.masked_fill(onehot, float("-inf")).amax(dim=1)
                margin = (real - other) if target is None else (other - real)
                loss = (l2 + cs * torch.clamp(margin, min=-kappa)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    ok = (margin <= -kappa) if kappa > 0 else _succeeded(logits, y, target)
                    better = ok & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best = torch.where(better.view(-1, 1, 1, 1), adv.detach(), best)
                    found |= ok
            # binary search on c (Carlini & Wagner): smaller where it worked, larger (x10 until bounded) where not
            hi = torch.where(found, torch.minimum(hi, cs), hi)
            lo = torch.where(found, lo, torch.maximum(lo, cs))
            cs = torch.where(hi < 1e9, (lo + hi) / 2, cs * 10)
    return best.detach()


def run_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig,
               target: torch.Tensor | None = None) -> torch.Tensor:
    """Dispatch on ``cfg.method``. Minimal-perturbation attacks (deepfool, cw) ignore eps while searching; their
    result is clipped into the eps box when ``cfg.eps`` > 0, so every method respects the budget."""
    m, eps = cfg.method, cfg.eps
    if m == "fgsm":
        return fgsm(model, x, y, eps, target)
    if m == "bim":
        return bim(model, x, y, eps, target, cfg.steps, cfg.step_size)
    if m == "ill":
        return ill(model, x, y, eps, cfg.steps, cfg.step_size)
    if m == "pgd":
        return pgd(model, x, y, eps, target, cfg.steps, cfg.step_size, cfg.restarts, cfg.random_start)
    if m == "pgd-l2":
        return pgd_l2(model, x, y, eps, target, cfg.steps, cfg.step_size, cfg.restarts, cfg.random_start)
    if m == "mifgsm":
        return mifgsm(model, x, y, eps, target, cfg.steps, cfg.step_size, cfg.decay)
    if m == "apgd-ce":
        from dlkit.vision.apgd import apgd_ce

        return apgd_ce(model, x, y, eps, cfg.steps or 100, cfg.restarts)
    if m == "deepfool":
        adv = deepfool(model, x, cfg.steps, cfg.overshoot, cfg.candidates)
    elif m == "cw":
        adv = cw(model, x, y, target, cfg.steps, cfg.cw_c, cfg.cw_kappa, cfg.cw_lr, cfg.cw_search)
    else:
        raise ValueError(f"unknown attack {m!r}")
    return clip_budget(adv, x, eps) if m in MINIMAL and eps > 0 else adv


def clip_budget(adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """A minimal-perturbation result cut down to the L-inf eps box (then classified again by the caller)."""
    return project_linf(adv, x, eps)
