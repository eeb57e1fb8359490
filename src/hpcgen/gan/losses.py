"""Non-saturating logistic GAN loss (Goodfellow et al. 2014, sec. 3; StyleGAN2-ADA's default)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))), with D = sigmoid(logits)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z))."""
    return F.softplus(-fake_logits).mean()
