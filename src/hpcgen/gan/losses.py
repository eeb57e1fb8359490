"""GAN losses and regularisers as pure functions of logits, images and networks.

D maximises log D(x) + log(1 - D(G(z))) (Goodfellow et al. 2014, eq. 1; the report's eq. 13)
with D = sigmoid(logits); softplus(-l) = -log sigmoid(l) keeps every form numerically stable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

LOSSES = ("nonsaturating", "minimax", "wgan_gp")


# Goodfellow et al. 2014, eq. 1: -log D(x) - log(1 - D(G(z))), the same for every logistic form
def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


# Goodfellow et al. 2014, sec. 3 (practical form; StyleGAN2-ADA's default): -log D(G(z))
def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


# Goodfellow et al. 2014, eq. 1 as written: G minimises log(1 - D(G(z))); saturates early on
def g_minimax_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -F.softplus(fake_logits).mean()


# Arjovsky et al. 2017 / Gulrajani et al. 2017, alg. 1: the critic's Wasserstein estimate,
# plus ProGAN's drift term eps * D(x)^2 that keeps the critic's output near zero
def d_wasserstein_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, drift: float = 1e-3
) -> torch.Tensor:
    return fake_logits.mean() - real_logits.mean() + drift * real_logits.square().mean()


def g_wasserstein_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


# Gulrajani et al. 2017, eq. 3: lambda * E[(||grad D(x_hat)||_2 - 1)^2], x_hat on real-fake lines
def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    eps = torch.rand(
        real.shape[0], 1, 1, 1, generator=generator, device=real.device, dtype=real.dtype
    )
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


# Mescheder et al. 2018, eq. 9: R1 = gamma/2 E[||grad_x D(x)||^2] on reals (gamma applied outside)
def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """real must require grad and real_logits come from it; keeps the graph for D's backward."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()


# StyleGAN2, sec. 3.2 eq. 4: E[(||J_w^T y||_2 - a)^2], y ~ N(0, I) / sqrt(H W), a an EMA of lengths
def path_length_penalty(
    img: torch.Tensor,
    ws: torch.Tensor,
    pl_mean: torch.Tensor,
    decay: float = 0.01,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(penalty, new pl_mean); img must come from ws with the graph kept."""
    h, w = img.shape[2], img.shape[3]
    noise = torch.randn(img.shape, generator=generator, device=img.device, dtype=img.dtype)
    (grad,) = torch.autograd.grad((img * noise / (h * w) ** 0.5).sum(), ws, create_graph=True)
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()  # (B,)
    new_mean = pl_mean.lerp(lengths.detach().mean().to(pl_mean.dtype), decay)
    return (lengths - new_mean).square().mean(), new_mean


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "wgan_gp":
        return d_wasserstein_loss(real_logits, fake_logits)
    return d_logistic_loss(real_logits, fake_logits)


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    return {
        "nonsaturating": g_nonsaturating_loss,
        "minimax": g_minimax_loss,
        "wgan_gp": g_wasserstein_loss,
    }[kind](fake_logits)
