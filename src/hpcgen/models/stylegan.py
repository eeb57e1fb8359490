"""A small convolutional generator and discriminator (DCGAN-like, Radford et al. 2016).

Minimal on purpose: the GAN issue replaces these with the StyleGAN2-ADA networks. Both are
plain single-device modules; any power-of-two resolution >= 8.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

PRESETS = {"tiny": {"channels": 32}, "small": {"channels": 64}}


class Generator(nn.Module):
    """G(z): (B, z_dim) -> (B, 3, R, R) in [-1, 1]."""

    def __init__(self, z_dim: int, resolution: int, channels: int = 64) -> None:
        super().__init__()
        self.z_dim = z_dim
        n_up = int(math.log2(resolution)) - 2
        self.c0 = channels * 2 ** min(n_up, 3)
        self.fc = nn.Linear(z_dim, self.c0 * 16)
        blocks, c = [], self.c0
        for i in range(n_up):
            c_out = channels * 2 ** min(n_up - i - 1, 3)
            blocks += [
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                nn.Conv2d(c, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(z)).view(-1, self.c0, 4, 4)  # (B, C0, 4, 4)
        return torch.tanh(self.to_rgb(self.blocks(h)))


class Discriminator(nn.Module):
    """D(x): (B, 3, R, R) -> (B,) logits."""

    def __init__(self, resolution: int, channels: int = 64) -> None:
        super().__init__()
        n_down = int(math.log2(resolution)) - 2
        layers, c = [nn.Conv2d(3, channels, 3, padding=1), nn.LeakyReLU(0.2)], channels
        for i in range(n_down):
            c_out = channels * 2 ** min(i + 1, 3)
            layers += [nn.Conv2d(c, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = c_out
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(c * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x).flatten(1)).squeeze(1)


def build_gan(preset: str, z_dim: int, resolution: int) -> tuple[Generator, Discriminator]:
    channels = PRESETS[preset]["channels"]
    return Generator(z_dim, resolution, channels), Discriminator(resolution, channels)
