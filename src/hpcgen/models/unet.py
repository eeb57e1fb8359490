"""ADM-style U-Net (Nichol & Dhariwal 2021; Dhariwal & Nichol 2021): the DDPM's denoiser.

Residual blocks with GroupNorm and a timestep embedding applied as scale and shift of the
second norm, self-attention at chosen resolutions, channel multipliers per level, dropout,
skip connections from every encoder block, and 3 or 6 output channels (6: the learned
variance's interpolation v of Improved DDPM eq. 15). A plain single-device module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class UNetPreset:
    channels: int
    mult: tuple[int, ...]
    res_blocks: int
    attention_resolutions: tuple[int, ...]
    heads: int = 4
    dropout: float = 0.0


# Sizes in the spirit of Improved DDPM's LSUN / ImageNet-64 models (README lists the counts).
PRESETS = {
    "tiny": UNetPreset(16, (1, 2), 1, (8,), heads=2),
    "small": UNetPreset(32, (1, 2, 2), 1, (8,)),
    "lsun64": UNetPreset(128, (1, 2, 3, 4), 2, (16, 8), dropout=0.1),
    "lsun256": UNetPreset(128, (1, 1, 2, 2, 4, 4), 2, (16, 8), dropout=0.1),
}


# Vaswani et al. 2017, as used by Ho et al. 2020: sinusoidal embedding of integer timesteps
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, dim)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


class ResBlock(nn.Module):
    """norm-SiLU-conv; norm * (1 + scale) + shift from the embedding; SiLU-dropout-conv."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.drop = _norm(c_out), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (ADM's zero init)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.drop(F.silu(h)))


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads, self.norm = heads, _norm(channels)
        self.qkv, self.out = nn.Conv1d(channels, 3 * channels, 1), nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, hgt * wid))  # (B, 3C, N)
        q, k, v = qkv.reshape(b * self.heads, 3 * c // self.heads, -1).chunk(3, dim=1)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )  # (B*heads, N, C/heads)
        return x + self.out(a.transpose(1, 2).reshape(b, c, -1)).reshape(b, c, hgt, wid)


class Level(nn.Module):
    """Blocks of one resolution: a ResBlock, then attention where configured."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, p: UNetPreset, attend: bool) -> None:
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, p.dropout)
        self.attn = Attention(c_out, p.heads) if attend else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    """(B, 3, R, R) images and (B,) timesteps -> (B, out_channels, R, R)."""

    def __init__(self, preset: UNetPreset, resolution: int, out_channels: int = 3) -> None:
        super().__init__()
        p, ch = preset, preset.channels
        self.channels, emb_dim = ch, 4 * ch
        self.time_mlp = nn.Sequential(
            nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.stem = nn.Conv2d(3, ch, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c, res = [ch], ch, resolution
        for i, m in enumerate(p.mult):
            for _ in range(p.res_blocks):
                self.down.append(Level(c, ch * m, emb_dim, p, res in p.attention_resolutions))
                c = ch * m
                skips.append(c)
            if i < len(p.mult) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
                res //= 2
        self.mid = nn.ModuleList([Level(c, c, emb_dim, p, True), Level(c, c, emb_dim, p, False)])
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(p.mult))):
            for j in range(p.res_blocks + 1):
                self.up.append(
                    Level(c + skips.pop(), ch * m, emb_dim, p, res in p.attention_resolutions)
                )
                c = ch * m
                if i > 0 and j == p.res_blocks:
                    self.up.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
                    res *= 2
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.channels).to(x.dtype))  # (B, 4C)
        h = self.stem(x)
        hs = [h]
        for block in self.down:
            h = block(h, emb) if isinstance(block, Level) else block(h)
            hs.append(h)
        for block in self.mid:
            h = block(h, emb)
        for block in self.up:
            if isinstance(block, Level):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = block(h)
        return self.out(h)


def build_unet(preset: str, out_channels: int = 3, resolution: int = 32) -> UNet:
    return UNet(PRESETS[preset], resolution, out_channels)
