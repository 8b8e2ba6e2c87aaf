"""Running attacks: one image (predictions before/after, perturbation sizes, survival of transformations) and a
test set (accuracy under attack against eps: the robustness table)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from dlkit.tasks.adversarial.data import apply_transforms, quantize, to_uint8
from dlkit.tasks.adversarial.spec import Transform
from dlkit.vision.attacks import MINIMAL, AttackConfig, clip_budget, run_attack


@dataclass
class Prediction:
    index: int
    label: str
    confidence: float  # softmax probability


@dataclass
class ImageResult:
    method: str
    eps: float
    target: Prediction | None
    before: list[Prediction]
    after: list[Prediction]  # the adversarial image as the attack left it (float)
    saved: list[Prediction]  # the same rounded to 8 bits, as an image file stores it
    linf: float  # [0, 1] units
    l2: float
    success: bool  # the label changed (untargeted) / the target was reached (targeted)
    saved_success: bool  # the same for the 8-bit image
    seconds: float
    transforms: str = ""
    transformed: list[Prediction] | None = None  # after the transformations
    survives: bool | None = None  # the attack still succeeds after them
    x: torch.Tensor | None = field(default=None, repr=False)  # (1, C, H, W) clean
    adv: torch.Tensor | None = field(default=None, repr=False)  # (1, C, H, W) adversarial (float)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("x"), d.pop("adv")
        d["eps_pixels"] = round(self.eps * 255, 4)
        return d


@torch.no_grad()
def top_k(model: nn.Module, x: torch.Tensor, classes: list[str], k: int = 5) -> list[Prediction]:
    """The k most probable classes of one image (1, C, H, W)."""
    probs = F.softmax(model(x).float(), dim=1)[0]
    conf, idx = probs.topk(min(k, probs.numel()))
    return [Prediction(int(i), classes[int(i)], float(c)) for c, i in zip(conf, idx)]


@torch.no_grad()
def _prob_of(model: nn.Module, x: torch.Tensor, index: int, classes: list[str]) -> Prediction:
    p = F.softmax(model(x).float(), dim=1)[0, index]
    return Prediction(index, classes[index], float(p))


def attack_image(model: nn.Module, classes: list[str], x: torch.Tensor, cfg: AttackConfig, target: int | None = None,
                 transforms: list[Transform] = (), k: int = 5, seed: int = 0) -> ImageResult:
    """Attack one image (1, C, H, W) in [0, 1]. The label attacked is the model's own prediction on the clean
    image (a photo has no ground truth); ``target`` makes the attack targeted."""
    t0 = time.perf_counter()
    before = top_k(model, x, classes, k)
    y = torch.tensor([before[0].index], device=x.device)
    tgt = torch.tensor([target], device=x.device) if target is not None else None
    adv = run_attack(model, x, y, cfg, tgt)
    seconds = time.perf_counter() - t0
    after = top_k(model, adv, classes, k)
    saved_img = quantize(adv)
    saved = top_k(model, saved_img, classes, k)
    delta = (adv - x).flatten()
    goal = (lambda p: p[0].index == target) if target is not None else (lambda p: p[0].index != y.item())
    res = ImageResult(cfg.method, cfg.eps, _prob_of(model, adv, target, classes) if target is not None else None,
                      before, after, saved, float(delta.abs().max()), float(delta.norm()), goal(after), goal(saved),
                      seconds,
                      x=x.detach().cpu(), adv=adv.detach().cpu())
    if transforms:
        moved = apply_transforms(saved_img, list(transforms), seed)
        res.transforms = ",".join(str(t) for t in transforms)
        res.transformed = top_k(model, moved, classes, k)
        res.survives = goal(res.transformed)
    return res


def noise_prediction(model: nn.Module, result: ImageResult, classes: list[str]) -> Prediction:
    """What the model sees in the perturbation itself, scaled to [0, 1] (the slide's "nematode", 8.2%)."""
    delta = result.adv - result.x
    noise = (0.5 + 0.5 * delta / max(float(delta.abs().max()), 1e-12)).clamp(0, 1)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return top_k(model, noise.to(device), classes, 1)[0]


# ---------------------------------------------------------------- a test set
@dataclass
class _Tally:
    n: int = 0
    correct: int = 0
    attacked: int = 0  # examples the attack had to change: clean-correct (untargeted) / not the target (targeted)
    fooled: int = 0
    linf: float = 0.0
    l2: float = 0.0
    destroyed: int = 0  # adversarial successes that the transformations undo (Kurakin's destruction rate)
    seconds: float = 0.0


def _tally(t: _Tally, logits, y, x, adv, clean_pred, target, after_tf=None) -> None:
    pred = logits.argmax(1)
    t.n += len(y)
    t.correct += int((pred == y).sum())
    if target is None:
        eligible = clean_pred == y
        ok = eligible & (pred != y)
    else:
        eligible = y != target
        ok = eligible & (pred == target)
    t.attacked += int(eligible.sum())
    t.fooled += int(ok.sum())
    d = (adv - x).flatten(1)
    t.linf += float(d.abs().amax(1).sum())
    t.l2 += float(d.norm(dim=1).sum())
    if after_tf is not None:
        still = (after_tf != y) if target is None else (after_tf == target)
        t.destroyed += int((ok & ~still).sum())


def robustness(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, methods: list[AttackConfig],
               eps_list: list[float], batch_size: int, device, target: int | None = None,
               transforms: list[Transform] = (), progress: Callable[..., None] | None = None,
               keep: Callable[[str, float, torch.Tensor, int], None] | None = None, seed: int = 0) -> list[dict]:
    """Accuracy under each attack at each eps over ``images`` (uint8 (N, C, H, W)) and ``labels``.

    Returns one record per (method, eps), eps 0 being the clean accuracy: ``method``, ``eps`` ([0, 1] units),
    ``accuracy``, ``success_rate`` (fooled / examples the attack had to change: the correctly classified ones,
    or those not already of the target class), mean ``linf`` / ``l2`` of the perturbation, ``n``; with
    ``transforms`` also ``destruction_rate``. Minimal-perturbation attacks (deepfool, cw) run once per batch and
    are clipped to each eps. ``keep(method, eps, adv_uint8, offset)`` receives every adversarial batch.
    ``progress(advance, **fields)`` is called after each attack run."""
    tallies = {(m.label, e): _Tally() for m in methods for e in eps_list}
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device).float().div_(255)
        y = labels[start:start + batch_size].to(device)
        tgt = torch.full_like(y, target) if target is not None else None
        with torch.no_grad():
            clean_pred = model(x).float().argmax(1)
        for cfg in methods:
            t0 = time.perf_counter()
            found = run_attack(model, x, y, replace(cfg, eps=0.0), tgt) if cfg.method in MINIMAL else None
            search = time.perf_counter() - t0  # a minimal attack's one search serves every eps
            for eps in eps_list:
                t1 = time.perf_counter()
                if eps == 0:
                    adv = x
                elif found is not None:
                    adv = clip_budget(found, x, eps)
                else:
                    adv = run_attack(model, x, y, replace(cfg, eps=eps), tgt)
                with torch.no_grad():
                    logits = model(adv).float()
                    moved = None
                    if transforms and eps > 0:
                        moved = model(apply_transforms(adv, list(transforms), seed)).float().argmax(1)
                tally = tallies[(cfg.label, eps)]
                _tally(tally, logits, y, x, adv, clean_pred, tgt, moved)
                tally.seconds += time.perf_counter() - t1 + (search if eps > 0 else 0.0)
                if keep is not None:
                    keep(cfg.label, eps, to_uint8(adv).cpu(), start)
                if progress is not None and eps > 0:
                    progress(1, method=cfg.label, eps=round(eps * 255, 2))
    rows = []
    for (method, eps), t in tallies.items():
        row = {"method": method, "eps": eps, "eps_pixels": round(eps * 255, 4),
               "accuracy": t.correct / max(t.n, 1), "success_rate": (t.fooled / t.attacked) if t.attacked else 0.0,
               "linf": t.linf / max(t.n, 1), "l2": t.l2 / max(t.n, 1), "n": t.n,
               "seconds": round(t.seconds, 3)}
        if transforms:
            row["destruction_rate"] = (t.destroyed / t.fooled) if t.fooled and eps > 0 else 0.0
        if target is not None:
            row["target"] = target
        rows.append(row)
    return rows


def attack_runs(methods: list[AttackConfig], eps_list: list[float], n: int, batch_size: int) -> int:
    """How many progress steps :func:`robustness` makes."""
    batches = -(-n // batch_size)
    return batches * len(methods) * sum(1 for e in eps_list if e > 0)
