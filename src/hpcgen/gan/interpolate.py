"""Latent interpolation: lerp and slerp in z, lerp in w (the report's Figure 9 grid)."""

from __future__ import annotations

import torch


def seeded_latents(seeds: list[int], z_dim: int) -> torch.Tensor:
    """z for each seed, (len(seeds), z_dim) on the CPU: image i depends on seeds[i] only."""
    return torch.stack(
        [torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds]
    )


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """a + t (b - a) for each t: a, b (B, D), t (S,) -> (B, S, D)."""
    return a[:, None] + t[None, :, None] * (b - a)[:, None]


# Shoemake 1985 / White 2016 ("Sampling generative networks"): interpolate along the great
# circle, which keeps Gaussian z at a typical norm where lerp would pass near the origin
def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation of direction with linear interpolation of norm: (B, S, D)."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na, b / nb
    omega = torch.acos((ua * ub).sum(dim=1, keepdim=True).clamp(-1 + eps, 1 - eps))  # (B, 1)
    t = t[None, :, None]  # (1, S, 1)
    so = torch.sin(omega)[:, None]
    direction = (
        torch.sin((1 - t) * omega[:, None]) / so * ua[:, None]
        + torch.sin(t * omega[:, None]) / so * ub[:, None]
    )
    return direction * (na[:, None] + t * (nb - na)[:, None])


@torch.no_grad()
def interpolation_grid(
    generator: torch.nn.Module,
    z_from: torch.Tensor,
    z_to: torch.Tensor,
    steps: int = 8,
    space: str = "z",
    method: str = "lerp",
    psi: float = 1.0,
) -> torch.Tensor:
    """One row per pair, `steps` images from G(z_from) to G(z_to): (B * steps, 3, H, W).

    space="z": interpolate latents (lerp or slerp); space="w": map both ends, lerp in W.
    Noise is the layers' constant noise, so only the latent moves along a row.
    """
    if space not in ("z", "w") or method not in ("lerp", "slerp"):
        raise ValueError(f"space must be z or w and method lerp or slerp, got {space}, {method}")
    if space == "w" and method == "slerp":
        raise ValueError("slerp is for Gaussian z; W is not spherical, use lerp in w")
    t = torch.linspace(0, 1, steps, device=z_from.device)
    b = z_from.shape[0]
    if space == "z":
        z = (slerp if method == "slerp" else lerp)(z_from, z_to, t).reshape(b * steps, -1)
        return generator(z, psi=psi, noise_mode="const")
    ws_from = generator.mapping(z_from, psi)[:, 0]  # (B, w_dim): one w for all layers
    ws_to = generator.mapping(z_to, psi)[:, 0]
    w = lerp(ws_from, ws_to, t).reshape(b * steps, 1, -1).repeat(1, generator.num_ws, 1)
    return generator.synthesis(w, "const", generator.reduced_dtype)
