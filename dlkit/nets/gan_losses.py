"""The GAN objectives on discriminator logits (D(x) = sigmoid(logit) for the logistic losses), shared by the
tasks that train a discriminator (gan, frames).

Goodfellow et al. 2014: min_G max_D V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))].

* ``minimax``: G minimises E[log(1 - D(G(z)))] = E[-softplus(l)]; d/dl = -D(G(z)), which vanishes when D
  confidently rejects the samples (early training): the saturation the paper warns about.
* ``non-saturating``: G maximises E[log D(G(z))] instead, i.e. minimises E[softplus(-l)]; d/dl = -(1 - D(G(z))),
  strong exactly when D rejects the samples. Same fixed point, the paper's practical choice.
* ``hinge`` (Lim & Ye 2017, Miyato et al. 2018): D: E[relu(1 - l_real)] + E[relu(1 + l_fake)]; G: -E[l_fake].
* ``wgan-gp`` (Gulrajani et al. 2017): D (the critic): E[l_fake] - E[l_real] + 10 E[(||grad_x l(x_hat)|| - 1)^2]
  on random interpolates x_hat; G: -E[l_fake].

The D loss of the logistic games is the negated value function, -V = -E[log D(x)] - E[log(1 - D(G(z)))].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("minimax", "non-saturating", "hinge", "wgan-gp")


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss from logits ``real`` (B,) and ``fake`` (B,), without the gradient penalty."""
    if kind in ("minimax", "non-saturating"):
        return F.softplus(-real).mean() + F.softplus(fake).mean()  # -log D(x) - log(1 - D(G(z)))
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    raise ValueError(f"unknown loss '{kind}'; expected one of {', '.join(LOSSES)}")


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss from the logits of generated samples ``fake`` (B,)."""
    if kind == "minimax":
        return -F.softplus(fake).mean()  # log(1 - sigmoid(l)) = -softplus(l)
    if kind == "non-saturating":
        return F.softplus(-fake).mean()  # -log sigmoid(l)
    if kind in ("hinge", "wgan-gp"):
        return -fake.mean()
    raise ValueError(f"unknown loss '{kind}'; expected one of {', '.join(LOSSES)}")


def gradient_penalty(disc, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Gulrajani et al. 2017: E[(||grad_x D(x_hat)||_2 - 1)^2], x_hat uniformly between real and fake."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, device=real.device, generator=generator)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = disc(x_hat, y)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def d_probability(kind: str, logits: torch.Tensor) -> torch.Tensor:
    """What is logged as D(x) / D(G(z)): the probability for the logistic games, the raw score otherwise."""
    return torch.sigmoid(logits) if kind in ("minimax", "non-saturating") else logits
