"""The model-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

Cascading randomisation: the layers with weights are re-initialised one by one from the top (the logits) down,
and after each chosen depth every method's map of the same image and the same class is compared with the
trained model's map by Spearman's rank correlation. A map that explains the *model* must change once the model
is destroyed (rank correlation near 0); a map that stays correlated is mostly an edge detector of the *image*
(Guided Backprop is Adebayo et al.'s known case).

Re-initialisation: convolutions and linear layers get He-normal weights (fan-in, so activations keep their scale
through a deep random network) and zero biases; normalisation layers their defaults (weight 1, bias 0, running
mean 0 and variance 1). One seeded generator makes the run repeatable.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

from dlkit.tasks.explain.methods import Explainer


@dataclass
class SanityRow:
    layers: int  # how many layers (from the top) are random now
    down_to: str  # the last of them, by module name
    spearman: dict[str, float]  # method -> rank correlation with the trained model's map (nan: a constant map)


def weight_layers(model: nn.Module, input_size) -> list[tuple[str, nn.Module]]:
    """Modules that hold their own parameters, in the order one forward pass first runs them."""
    names = {m: n for n, m in model.named_modules()}
    seen: list[nn.Module] = []

    def hook(mod, inp, out):
        if mod not in seen:
            seen.append(mod)

    owners = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    hooks = [m.register_forward_hook(hook) for m in owners]
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, *input_size, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    return [(names[m], m) for m in seen]


@torch.no_grad()
def reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        w = torch.empty_like(module.weight, device="cpu")
        nn.init.kaiming_normal_(w, nonlinearity="relu", generator=generator)
        module.weight.copy_(w)
        if module.bias is not None:
            module.bias.zero_()
    elif isinstance(module, nn.modules.batchnorm._NormBase) or hasattr(module, "reset_parameters"):
        module.reset_parameters()
    else:
        for p in module.parameters(recurse=False):
            p.copy_(torch.randn(p.shape, generator=generator) * 0.02)


def depths(n: int) -> list[int]:
    """1, 2, 4, ... layers from the top, and finally all ``n``."""
    out, k = [], 1
    while k < n:
        out.append(k)
        k *= 2
    return out + [n]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant map: scipy warns and returns nan, which is reported as such
        rho = spearmanr(a.flatten().double().cpu().numpy(), b.flatten().double().cpu().numpy()).statistic
    return float(rho)


def cascading_randomisation(explainer: Explainer, x: torch.Tensor, target: int, methods: list[str],
                            trained: dict[str, torch.Tensor] | None = None, seed: int = 0,
                            at: list[int] | None = None) -> list[SanityRow]:
    """Rows of rank correlations for image ``x`` (1, C, H, W), from the top layer down to all of them.

    ``trained`` holds the trained model's maps (H, W) when already computed; ``at`` the depths to stop at
    (default :func:`depths`). The explainer's model itself is left untouched (a copy is randomised)."""
    if trained is None:
        trained = {m: explainer.attribute(x, target, m, seed)[0] for m in methods}
    model = copy.deepcopy(explainer.model).eval()
    layers = list(reversed(weight_layers(model, explainer.input_size)))  # top (logits) first
    g = torch.Generator().manual_seed(seed)
    rows, done = [], 0
    for k in at or depths(len(layers)):
        k = min(k, len(layers))
        for _, module in layers[done:k]:
            reinitialise(module, g)
        done = k
        random_explainer = Explainer(model, explainer.input_size, explainer.cfg)
        rho = {m: spearman(trained[m], random_explainer.attribute(x, target, m, seed)[0]) for m in methods}
        rows.append(SanityRow(k, layers[k - 1][0], rho))
    return rows
