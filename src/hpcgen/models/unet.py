"""A small U-Net for eps-prediction: residual blocks with GroupNorm and a timestep embedding.

Minimal on purpose (the DDPM issue brings the ADM-style network); a plain single-device module.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

PRESETS = {"tiny": {"channels": 16, "mult": (1, 2)}, "small": {"channels": 32, "mult": (1, 2, 2)}}


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017, as used by Ho et al.)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, dim)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(min(8, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """The denoiser: (B, 3, H, W), (B,) -> (B, out_channels, H, W) (6 with a learned variance)."""

    def __init__(
        self, channels: int = 32, mult: tuple[int, ...] = (1, 2, 2), out_channels: int = 3
    ) -> None:
        super().__init__()
        self.emb_dim = channels * 4
        self.time_mlp = nn.Sequential(
            nn.Linear(channels, self.emb_dim), nn.SiLU(), nn.Linear(self.emb_dim, self.emb_dim)
        )
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        widths = [channels * m for m in mult]
        self.down = nn.ModuleList()
        c = channels
        for w in widths:
            self.down.append(ResBlock(c, w, self.emb_dim))
            c = w
        self.mid = ResBlock(c, c, self.emb_dim)
        self.up = nn.ModuleList()
        for w in reversed(widths):
            self.up.append(ResBlock(c + w, w, self.emb_dim))
            c = w
        self.out = nn.Sequential(
            nn.GroupNorm(min(8, c), c), nn.SiLU(), nn.Conv2d(c, out_channels, 3, padding=1)
        )
        self.base_channels = channels

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base_channels).to(x.dtype))  # (B, E)
        h = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
        h = self.mid(h, emb)
        for i, block in enumerate(self.up):
            if i > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def build_unet(preset: str, out_channels: int = 3) -> UNet:
    return UNet(**PRESETS[preset], out_channels=out_channels)
