"""Gaussian Parzen-window log-likelihood, the protocol of Goodfellow et al. 2014 (Table 1; after Breuleux
et al. 2011): fit an isotropic Gaussian kernel density to generated samples, choose the bandwidth sigma on a
validation split (the last 10,000 MNIST training images, pylearn2's "valid"), report the mean log-likelihood
of the test set in nats with its standard error. Their code searched sigma over ``logspace(-1, 0, 10)`` with
pixels in [0, 1]; the paper's figure for its GAN on MNIST is 225 +- 2. Known to be a weak measure of sample
quality in high dimensions (Theis et al. 2016): kept because the lecture's table uses it.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

SIGMAS = tuple(float(s) for s in np.logspace(-1, 0, 10))


def _sq_dists(x: torch.Tensor, s: torch.Tensor, s_sq: torch.Tensor) -> torch.Tensor:
    """||x_i - s_j||^2 for x (B, D) and samples s (N, D) -> (B, N), clamped at 0."""
    return (x.pow(2).sum(1, keepdim=True) + s_sq[None, :] - 2.0 * x @ s.T).clamp_min_(0.0)


@torch.no_grad()
def log_likelihoods(x: torch.Tensor, samples: torch.Tensor, sigmas=SIGMAS, batch: int = 500,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Per-example log p(x) under the Parzen window of ``samples`` for each sigma -> (len(sigmas), B) float64.

    log p(x) = logsumexp_i(-||x - s_i||^2 / (2 sigma^2)) - log N - D/2 log(2 pi sigma^2)."""
    x, s = x.flatten(1).float(), samples.flatten(1).float()
    n, d = s.shape
    s_sq = s.pow(2).sum(1)
    out = np.zeros((len(sigmas), len(x)))
    for i in range(0, len(x), batch):
        d2 = _sq_dists(x[i:i + batch], s, s_sq).double()  # (b, N)
        for k, sigma in enumerate(sigmas):
            lse = torch.logsumexp(-d2 / (2 * sigma * sigma), dim=1)
            out[k, i:i + batch] = (lse - math.log(n) - 0.5 * d * math.log(2 * math.pi * sigma * sigma)).numpy()
        if progress:
            progress(min(batch, len(x) - i))
    return out


def parzen(samples: torch.Tensor, valid: torch.Tensor, test: torch.Tensor, sigmas=SIGMAS,
           progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """Choose sigma by the mean validation log-likelihood, then score the test set with it.

    All inputs are float pixels in [0, 1] (or any common scale); returns ``ll`` (mean nats), ``se``
    (standard error of the mean), ``sigma`` and the validation ``ll_valid``."""
    ll_valid = log_likelihoods(valid, samples, sigmas, progress=progress).mean(1)
    best = int(np.argmax(ll_valid))
    sigma = sigmas[best]
    ll = log_likelihoods(test, samples, (sigma,), progress=progress)[0]
    return {"ll": float(ll.mean()), "se": float(ll.std(ddof=1) / math.sqrt(len(ll))), "sigma": float(sigma),
            "ll_valid": float(ll_valid[best])}
