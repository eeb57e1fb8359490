"""ADM-style U-Net (Nichol & Dhariwal 2021; Dhariwal & Nichol 2021): the DDPM's denoiser.

Residual blocks with GroupNorm and a timestep embedding applied as scale and shift of the
second norm, self-attention at chosen resolutions, channel multipliers per level, dropout,
skip connections from every encoder block, and 3 or 6 output channels (6: the learned
variance's interpolation v of Improved DDPM eq. 15). A plain single-device module.

Presets can also take the embedding as a bias of the first conv (improved-diffusion's
use_scale_shift_norm=False, diffusers' default), convolve after each 2x up-sampling (ADM's
conv_resample, on in ADM and diffusers; off in the first presets, whose counts README lists) and
resample inside residual blocks (ADM's resblock_updown, "BigGAN up/downsample").

activation_checkpointing=True recomputes each residual and attention block in the backward pass
(the granularity of improved-diffusion's use_checkpoint) instead of keeping its activations:
only in a training forward with grad enabled, so sampling and evaluation run as before, and
without new parameters or buffers, so checkpoints load either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class UNetPreset:
    channels: int
    mult: tuple[int, ...]
    res_blocks: int
    attention_resolutions: tuple[int, ...]
    heads: int = 4
    dropout: float = 0.0
    head_channels: int | None = None  # set: heads = channels // head_channels (ADM)
    scale_shift: bool = True  # False: the embedding is added after the first conv
    upsample_conv: bool = False  # a 3x3 conv after each nearest-neighbour 2x up-sampling
    resblock_updown: bool = False  # resample in a residual block instead (ADM, BigGAN)

    def heads_at(self, channels: int) -> int:
        return channels // self.head_channels if self.head_channels else self.heads


# Sizes in the spirit of Improved DDPM's LSUN / ImageNet-64 models (README lists the counts).
PRESETS = {
    "tiny": UNetPreset(16, (1, 2), 1, (8,), heads=2),
    "small": UNetPreset(32, (1, 2, 2), 1, (8,)),
    "lsun64": UNetPreset(128, (1, 2, 3, 4), 2, (16, 8), dropout=0.1),
    "lsun256": UNetPreset(128, (1, 1, 2, 2, 4, 4), 2, (16, 8), dropout=0.1),
    # diffusers' examples/unconditional_image_generation/train_unconditional.py UNet2DModel:
    # block_out_channels (128, 128, 256, 256, 512, 512), layers_per_block 2, attention in the
    # 5th down / 2nd up block (4 px at 64 px), attention_head_dim 8
    "hf64": UNetPreset(
        128, (1, 1, 2, 2, 4, 4), 2, (4,), head_channels=8, scale_shift=False, upsample_conv=True
    ),
    # improved-diffusion README, "LSUN bedroom model": num_channels 128, num_res_blocks 2,
    # num_heads 1, attention 16, use_scale_shift_norm False; channel_mult as its create_model
    # picks for 64 and 256 px
    "iddpm_lsun64": UNetPreset(128, (1, 2, 3, 4), 2, (16,), heads=1, scale_shift=False,
                               upsample_conv=True),
    "iddpm_lsun256": UNetPreset(128, (1, 1, 2, 2, 4, 4), 2, (16,), heads=1, scale_shift=False,
                                upsample_conv=True),
    # Dhariwal & Nichol 2021 (ADM), LSUN: guided-diffusion README's lsun_bedroom.pt flags
    "adm_lsun256": UNetPreset(256, (1, 1, 2, 2, 4, 4), 2, (32, 16, 8), head_channels=64,
                              dropout=0.1, upsample_conv=True, resblock_updown=True),
}  # fmt: skip


# Vaswani et al. 2017, as used by Ho et al. 2020: sinusoidal embedding of integer timesteps
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, dim)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


def _resample(x: torch.Tensor, how: str | None) -> torch.Tensor:
    if how == "down":
        return F.avg_pool2d(x, 2)
    return F.interpolate(x, scale_factor=2.0, mode="nearest") if how == "up" else x


class Recomputable(nn.Module):
    """A block whose forward is its subclass's `compute`; with `recompute` set, a training
    forward with grad enabled keeps only the block's inputs and runs it again in the backward.
    Non-reentrant checkpointing: what ZeRO-3's partitioned parameters need, and it restores the
    RNG state, so dropout draws the same mask twice."""

    recompute = False  # a plain attribute: the state_dict is the same either way
    compute: Callable[..., torch.Tensor]  # ResBlock's and Attention's

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if self.recompute and self.training and torch.is_grad_enabled():
            return checkpoint(self.compute, *args, use_reentrant=False)
        return self.compute(*args)


class ResBlock(Recomputable):
    """norm-SiLU-conv; norm * (1 + scale) + shift from the embedding; SiLU-dropout-conv.

    scale_shift=False adds the embedding to the first conv's output instead. resample="down" or
    "up" halves or doubles the resolution of both branches (ADM's BigGAN-style block)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        emb_dim: int,
        dropout: float,
        scale_shift: bool = True,
        resample: str | None = None,
    ) -> None:
        super().__init__()
        self.scale_shift, self.resample = scale_shift, resample
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out if scale_shift else c_out)
        self.norm2, self.drop = _norm(c_out), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (ADM's zero init)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def compute(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_resample(F.silu(self.norm1(x)), self.resample))
        x = _resample(x, self.resample)
        e = self.emb(F.silu(emb))[:, :, None, None]  # (B, 2C or C, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        return self.skip(x) + self.conv2(self.drop(F.silu(h)))


class Attention(Recomputable):
    """Multi-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads, self.norm = heads, _norm(channels)
        self.qkv, self.out = nn.Conv1d(channels, 3 * channels, 1), nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
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
        self.res = ResBlock(c_in, c_out, emb_dim, p.dropout, p.scale_shift)
        self.attn = Attention(c_out, p.heads_at(c_out)) if attend else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    """(B, 3, R, R) images and (B,) timesteps -> (B, out_channels, R, R)."""

    def __init__(
        self,
        preset: UNetPreset,
        resolution: int,
        out_channels: int = 3,
        activation_checkpointing: bool = False,
    ) -> None:
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
                self.down.append(_downsample(c, emb_dim, p))
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
                    self.up.append(_upsample(c, emb_dim, p))
                    res *= 2
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.set_activation_checkpointing(activation_checkpointing)

    def set_activation_checkpointing(self, on: bool) -> None:
        """Recompute every residual and attention block in the backward (on) or keep their
        activations (off); weights and state_dict keys are untouched."""
        for block in self.modules():
            if isinstance(block, Recomputable):
                block.recompute = on

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.channels).to(x.dtype))  # (B, 4C)
        h = self.stem(x)
        hs = [h]
        for block in self.down:
            h = block(h, emb) if isinstance(block, (Level, ResBlock)) else block(h)
            hs.append(h)
        for block in self.mid:
            h = block(h, emb)
        for block in self.up:
            if isinstance(block, Level):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        return self.out(h)


def _downsample(c: int, emb_dim: int, p: UNetPreset) -> nn.Module:
    if p.resblock_updown:
        return ResBlock(c, c, emb_dim, p.dropout, p.scale_shift, resample="down")
    return nn.Conv2d(c, c, 3, stride=2, padding=1)


def _upsample(c: int, emb_dim: int, p: UNetPreset) -> nn.Module:
    if p.resblock_updown:
        return ResBlock(c, c, emb_dim, p.dropout, p.scale_shift, resample="up")
    up = nn.Upsample(scale_factor=2.0, mode="nearest")
    return nn.Sequential(up, nn.Conv2d(c, c, 3, padding=1)) if p.upsample_conv else up


def build_unet(
    preset: str, out_channels: int = 3, resolution: int = 32, activation_checkpointing: bool = False
) -> UNet:
    return UNet(PRESETS[preset], resolution, out_channels, activation_checkpointing)
