"""Faithfulness of a map: deletion and insertion AUC (Petsiuk et al. 2018, RISE), and the two reference maps.

Pixels are ranked by the map (most important first). *Deletion* replaces them, in ``steps`` equal chunks, by a
baseline and follows the softmax probability of the target class; a faithful map makes it fall fast (low AUC).
*Insertion* starts from a baseline and puts the original pixels back in the same order; a faithful map makes it
rise fast (high AUC). Baselines: ``rise`` (Petsiuk et al.'s choice: deletion to black, insertion from a blurred
copy, whose coarse shapes do not hand the model the answer but avoid the sharp edges of pixels set into black),
``zero`` (black for both) or ``blur`` (the blurred copy for both). The AUC is the mean of the curve over the fraction of
pixels changed, by the trapezoid rule, so it lies in [0, 1].

Each score only means something beside the same score of a map that knows nothing about the image: a uniformly
random map and a centred Gaussian (photographers centre their subject, so the centre is a strong guess).
Ties in a map keep row-major order (stable sort).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

BASELINES = ("rise", "zero", "blur")


@dataclass
class Curves:
    deletion: list[float]  # probability of the target after deleting 0, 1/steps, ..., all of the pixels
    insertion: list[float]

    @property
    def deletion_auc(self) -> float:
        return auc(self.deletion)

    @property
    def insertion_auc(self) -> float:
        return auc(self.insertion)


def auc(curve: list[float]) -> float:
    """Trapezoid area under a curve sampled at equal steps over [0, 1]."""
    if len(curve) < 2:
        return float(curve[0]) if curve else float("nan")
    inner = sum(curve[1:-1])
    return (inner + 0.5 * (curve[0] + curve[-1])) / (len(curve) - 1)


def baseline_images(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(what deleted pixels become, what insertion starts from) for ``kind`` (see the module docstring)."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; expected one of {', '.join(BASELINES)}")
    black = torch.zeros_like(x)
    if kind == "zero":
        return black, black
    blurred = blur(x)
    return (black if kind == "rise" else blurred), blurred


def blur(x: torch.Tensor) -> torch.Tensor:
    """A Gaussian blur of (B, C, H, W): RISE's kernel of 11 pixels with sigma 5 at 224x224, scaled with the
    image's shorter side."""
    import torchvision.transforms.functional as TF

    scale = min(x.shape[-2:]) / 224
    sigma = max(0.5, 5.0 * scale)
    k = max(3, int(round(11 * scale)) | 1)  # odd
    return TF.gaussian_blur(x, [k, k], [sigma, sigma])


def random_map(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A uniformly random (h, w) map (the same for the same seed)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(h, w, generator=g)


def gaussian_map(h: int, w: int) -> torch.Tensor:
    """A centred isotropic Gaussian (h, w) with sigma a quarter of the shorter side."""
    sigma = min(h, w) / 4
    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    return torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))


@torch.no_grad()
def curves(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target: int, baseline: str = "rise",
           steps: int = 50, batch: int = 16) -> Curves:
    """Deletion and insertion curves of one image ``x`` (C, H, W) in [0, 1] ranked by ``saliency`` (H, W)."""
    c, h, w = x.shape
    n = h * w
    order = torch.argsort(saliency.reshape(-1).float().cpu(), descending=True, stable=True)
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    rank = rank.to(x.device).view(1, 1, h, w)
    counts = torch.linspace(0, n, steps + 1).round().long().to(x.device)
    gone, start = (b[0] for b in baseline_images(x.unsqueeze(0), baseline))
    probs = {"deletion": [], "insertion": []}
    for i in range(0, steps + 1, batch):
        chosen = rank < counts[i:i + batch].view(-1, 1, 1, 1)  # (b, 1, H, W): pixels already moved
        for kind, (moved, kept) in (("deletion", (gone, x)), ("insertion", (x, start))):
            images = torch.where(chosen, moved, kept)  # (b, C, H, W)
            p = torch.softmax(model(images).float(), dim=1)[:, target]
            probs[kind] += p.cpu().tolist()
    return Curves(probs["deletion"], probs["insertion"])


def faithfulness(model: nn.Module, x: torch.Tensor, maps: dict[str, torch.Tensor], target: int,
                 baseline: str = "rise", steps: int = 50, batch: int = 16, seed: int = 0) -> dict[str, dict]:
    """{name: {"deletion": auc, "insertion": auc}} for each map, plus ``random`` and ``gaussian`` references."""
    h, w = x.shape[-2:]
    refs = {"random": random_map(h, w, seed), "gaussian": gaussian_map(h, w)}
    out = {}
    for name, m in {**maps, **refs}.items():
        cv = curves(model, x, m, target, baseline, steps, batch)
        out[name] = {"deletion": round(cv.deletion_auc, 4), "insertion": round(cv.insertion_auc, 4)}
    return out
