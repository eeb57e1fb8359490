"""The report's DDPM figures as PNG writers: the noising process x_0 -> x_T, and the network's
predicted noise beside the true noise at several t (with the per-t MSE)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torchvision.utils import save_image

from hpcgen.diffusion.gaussian import Diffusion, p_mean_variance, q_sample


def _save(images: torch.Tensor, path: Path, nrow: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.clamp(-1, 1) + 1) / 2, path, nrow=nrow, padding=1)
    return path


def noising_strip(
    d: Diffusion, x0: torch.Tensor, path: Path, columns: int = 8, seed: int = 0
) -> Path:
    """One row per image: x_t for t evenly spaced from 0 to T-1 with one fixed noise."""
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    ts = torch.linspace(0, d.T - 1, columns).round().long()
    frames = [q_sample(d, x0, t.repeat(len(x0)), noise) for t in ts]
    return _save(torch.stack(frames, dim=1).flatten(0, 1), path, nrow=columns)


@torch.no_grad()
def predicted_noise_figure(
    d: Diffusion,
    model: Callable,
    x0: torch.Tensor,
    path: Path,
    ts: tuple[int, ...] = (50, 250, 500, 750, 950),
    parameterisation: str = "eps",
    variance: str = "fixed_small",
    seed: int = 0,
) -> dict[int, float]:
    """One row per image; for each t three columns: x_t, the true noise, the predicted noise
    (both shown at +-3 sigma). Returns the predicted-vs-true noise MSE at each t over all x0."""
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    rows, mse = [], {}
    for t_int in ts:
        t = torch.full((len(x0),), min(t_int, d.T - 1), dtype=torch.long)
        xt = q_sample(d, x0, t, noise)
        out = model(xt, d.timesteps[t])
        x0_hat = p_mean_variance(d, out, xt, t, parameterisation, variance, clip_x0=False)["x0"]
        ab = d.alpha_bar[t].float()[:, None, None, None]
        eps_hat = (xt - ab.sqrt() * x0_hat) / (1 - ab).sqrt()
        mse[int(t_int)] = float((eps_hat - noise).square().mean())
        rows.append(torch.stack([xt, noise / 3, eps_hat / 3], dim=1))  # noise shown at +-3 sigma
    _save(torch.cat(rows, dim=1).flatten(0, 1), path, nrow=3 * len(ts))
    return mse
