"""Minimal Gaussian diffusion: linear schedule, q(x_t | x_0), L_simple, ancestral sampling."""

from __future__ import annotations

from collections.abc import Callable

import torch


# Ho et al. 2020, sec. 4: beta_t linear from 1e-4 to 0.02 over T = 1000, scaled for other T
def linear_betas(steps: int) -> torch.Tensor:
    scale = 1000 / steps
    return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)


def alpha_bars(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1.0 - betas, dim=0)


# Ho et al. 2020, eq. 4: q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor):
    ab = alpha_bar.to(x0.device)[t].to(x0.dtype)[:, None, None, None]  # (B, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


# Ho et al. 2020, eq. 14: L_simple = || eps - eps_theta(x_t, t) ||^2
def simple_loss(
    model: Callable, x0: torch.Tensor, alpha_bar: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    b = x0.shape[0]
    t = torch.randint(0, alpha_bar.shape[0], (b,), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    eps = model(q_sample(x0, t, noise, alpha_bar), t)
    return (eps - noise).square().mean()


# Improved DDPM (Nichol & Dhariwal 2021), sec. 4: respacing. Keep alpha_bar on an evenly spaced
# subsequence S of timesteps; beta_i = 1 - alpha_bar[S_i] / alpha_bar[S_{i-1}].
def respace(betas: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps S, respaced betas) for sampling with `steps` <= T model calls."""
    T = betas.shape[0]
    if not 1 <= steps <= T:
        raise ValueError(f"sampling steps must be in 1..{T}, got {steps}")
    timesteps = torch.linspace(0, T - 1, steps).round().long().unique()
    ab = alpha_bars(betas)[timesteps]
    prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    return timesteps, 1.0 - ab / prev


# Ho et al. 2020, eq. 6-7 and 15: x0 from eps (clipped to the data range, as improved-diffusion's
# clip_denoised does), then the posterior q(x_{t-1} | x_t, x0) with variance beta_tilde, over
# respaced timesteps.
@torch.no_grad()
def ddpm_sample(
    model: Callable,
    shape: tuple[int, ...],
    betas: torch.Tensor,
    generator: torch.Generator,
    steps: int | None = None,
) -> torch.Tensor:
    timesteps, betas = respace(betas, steps or betas.shape[0])
    alpha_bar = alpha_bars(betas)
    alpha_bar_prev = torch.cat([torch.ones(1, dtype=alpha_bar.dtype), alpha_bar[:-1]])
    coef_x0 = betas * alpha_bar_prev.sqrt() / (1 - alpha_bar)
    coef_xt = (1 - alpha_bar_prev) * (1 - betas).sqrt() / (1 - alpha_bar)
    beta_tilde = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)
    x = torch.randn(shape, generator=generator, dtype=torch.float32)
    for i in reversed(range(betas.shape[0])):
        t = torch.full((shape[0],), int(timesteps[i]), dtype=torch.long)
        eps = model(x, t)
        x0 = ((x - float((1 - alpha_bar[i]).sqrt()) * eps) / float(alpha_bar[i].sqrt())).clamp(
            -1, 1
        )
        x = float(coef_x0[i]) * x0 + float(coef_xt[i]) * x
        if i > 0:
            x = x + float(beta_tilde[i].sqrt()) * torch.randn(shape, generator=generator)
    return x.clamp(-1, 1)
