"""Faithfulness of a map: deletion and insertion AUC (Petsiuk et al. 2018, RISE), and the reference maps.

Pixels are ranked by the map (most important first). *Deletion* replaces them, in ``steps`` equal chunks, by a
substrate and follows the softmax probability of the target class; a faithful map makes it fall fast (low AUC).
*Insertion* starts from a substrate and puts the original pixels back in the same order; a faithful map makes it
rise fast (high AUC). Baselines (what deleted pixels become / what insertion starts from):

* ``rise`` (default): the model's mean colour / a blurred copy. This is Petsiuk et al.'s published protocol:
  their code deletes to ``zeros_like`` of the *normalised* tensor, i.e. to the colour the model's normalisation
  maps to 0 (``mean`` below), and inserts into a blurred copy (kernel 11, sigma 5 at 224x224).
* ``mean``: the mean colour for both. ``zero``: black pixels (value 0) for both. ``blur``: the blurred copy for
  both.

Pixel-level deletion has a known confound: scattered changed pixels are a speckle nothing in the training data
looks like, and the speckle of a *random* order destroys a prediction faster than removing a coarse region
does; the darker the substrate against the image, the stronger the effect (black is the strongest). Compare a
coarse map (Grad-CAM) with :func:`coarse_random_map` as well as with the pixel-level random map.

The AUC is the mean of the curve over the fraction of pixels changed, by the trapezoid rule, so it lies in [0, 1].
Each score only means something beside the same score of a map that knows nothing about the image: a uniformly
random map and a centred Gaussian (photographers centre their subject, so the centre is a strong guess).

Ties: a map clipped at zero (Integrated Gradients' positive part; Grad-CAM after its ReLU) has a plateau of
equal pixels. The rank inside a plateau is decided by a ``tie_break`` map when one is given (the method's signed
evidence: the pixels that count most *against* the class go last), then by row-major order (stable sort).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

BASELINES = ("rise", "mean", "zero", "blur")


@dataclass
class Curves:
    deletion: list[float]  # probability of the target after deleting 0, 1/steps, ..., all of the pixels
    insertion: list[float]  # (empty when not asked for: its AUC is nan)

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


def baseline_images(x: torch.Tensor, kind: str, mean: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(what deleted pixels become, what insertion starts from) for ``kind`` (see the module docstring); ``mean``
    is the mean colour (C, 1, 1) or (1, C, 1, 1) in pixel units (mid-grey 0.5 when not given)."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; expected one of {', '.join(BASELINES)}")
    if kind == "zero":
        black = torch.zeros_like(x)
        return black, black
    flat = torch.full_like(x, 0.5) if mean is None else mean.to(x).expand_as(x).clone()
    if kind == "mean":
        return flat, flat
    blurred = blur(x)
    return (flat if kind == "rise" else blurred), blurred


def mean_colour(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The pixels (C, 1, 1) that ``model``'s input normalisation maps to zero: a dlkit Classifier's mean, or the
    image's own mean for a per-image whitening model; None for a model without a known normalisation."""
    c = x.shape[-3]
    if getattr(model, "whiten", False):
        return x.float().mean().expand(c).reshape(c, 1, 1)
    mean = getattr(model, "_mean", None)
    if not torch.is_tensor(mean):
        return None
    return mean.float().reshape(-1)[:c].expand(c).reshape(c, 1, 1) if mean.numel() in (1, c) else None


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


def coarse_random_map(h: int, w: int, grid: int = 7, seed: int = 0) -> torch.Tensor:
    """A random map as coarse as Grad-CAM's: uniform values on a ``grid``-cell grid along the shorter side,
    upsampled bilinearly to (h, w). Beside a coarse map it tells the speckle confound from the map's content."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    gh, gw = (grid, max(1, round(grid * w / h))) if h <= w else (max(1, round(grid * h / w)), grid)
    cells = torch.rand(1, 1, gh, gw, generator=g)
    return F.interpolate(cells, size=(h, w), mode="bilinear", align_corners=False)[0, 0]


def gaussian_map(h: int, w: int) -> torch.Tensor:
    """A centred isotropic Gaussian (h, w) with sigma a quarter of the shorter side."""
    sigma = min(h, w) / 4
    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    return torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))


def ranking(saliency: torch.Tensor, tie_break: torch.Tensor | None = None) -> torch.Tensor:
    """Flat pixel indices, most important first: by ``saliency``, equal values by ``tie_break`` (higher first),
    then row-major (two stable sorts: a lexicographic order)."""
    s = saliency.reshape(-1).float().cpu()
    if tie_break is None:
        return torch.argsort(s, descending=True, stable=True)
    first = torch.argsort(tie_break.reshape(-1).float().cpu(), descending=True, stable=True)
    return first[torch.argsort(s[first], descending=True, stable=True)]


@torch.no_grad()
def curves(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target: int, baseline: str = "rise",
           steps: int = 50, batch: int = 16, tie_break: torch.Tensor | None = None,
           which: tuple[str, ...] = ("deletion", "insertion")) -> Curves:
    """Deletion and insertion curves of one image ``x`` (C, H, W) in [0, 1] ranked by ``saliency`` (H, W), ties by
    ``tie_break`` (H, W); ``which`` leaves one of the two out."""
    c, h, w = x.shape
    n = h * w
    rank = torch.empty(n, dtype=torch.long)
    rank[ranking(saliency, tie_break)] = torch.arange(n)
    rank = rank.to(x.device).view(1, 1, h, w)
    counts = torch.linspace(0, n, steps + 1).round().long().to(x.device)
    gone, start = (b[0] for b in baseline_images(x.unsqueeze(0), baseline, mean_colour(model, x)))
    moves = {"deletion": (gone, x), "insertion": (x, start)}
    probs = {"deletion": [], "insertion": []}
    for i in range(0, steps + 1, batch):
        chosen = rank < counts[i:i + batch].view(-1, 1, 1, 1)  # (b, 1, H, W): pixels already moved
        for kind in which:
            moved, kept = moves[kind]
            images = torch.where(chosen, moved, kept)  # (b, C, H, W)
            p = torch.softmax(model(images).float(), dim=1)[:, target]
            probs[kind] += p.cpu().tolist()
    return Curves(probs["deletion"], probs["insertion"])


def faithfulness(model: nn.Module, x: torch.Tensor, maps: dict[str, torch.Tensor], target: int,
                 baseline: str = "rise", steps: int = 50, batch: int = 16, seed: int = 0,
                 tie_breaks: dict[str, torch.Tensor] | None = None,
                 which: tuple[str, ...] = ("deletion", "insertion")) -> dict[str, dict]:
    """{name: {"deletion": auc, "insertion": auc}} for each map, plus ``random`` and ``gaussian`` references;
    ``tie_breaks`` {name: (H, W)} orders each map's equal pixels (see :func:`ranking`)."""
    h, w = x.shape[-2:]
    refs = {"random": random_map(h, w, seed), "gaussian": gaussian_map(h, w)}
    ties = tie_breaks or {}
    out = {}
    for name, m in {**maps, **refs}.items():
        cv = curves(model, x, m, target, baseline, steps, batch, ties.get(name) if name in maps else None, which)
        out[name] = {kind: round(getattr(cv, f"{kind}_auc"), 4) for kind in which}
    return out
