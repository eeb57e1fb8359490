"""StyleGAN2-ADA generator and residual discriminator (Karras et al. 2020a/b), plain PyTorch.

Layer names and sizes follow the official networks, so the `stylegan2` preset at 64x64 has the
report's 22,243,608 generator and 23,407,361 discriminator parameters (its Figures 5 and 6).
Blocks at the highest resolutions can run in bf16/fp16, as StyleGAN2-ADA's mixed precision does;
everything else stays in fp32. With conv_clamp set, every convolution's activations are clamped to
+-conv_clamp in every block, fp32 ones too, as in the reference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hpcgen.models.stylegan_layers import (
    Conv2dLayer,
    FullyConnected,
    bias_act,
    lowpass_filter,
    modulated_conv2d,
    upsample2d,
)

# z = w = 512 with 2 mapping layers and channels min(16384 / res, 512) is the report's network
PRESETS = {
    "tiny": dict(z_dim=64, w_dim=64, mapping_layers=2, channel_base=512, channel_max=64),
    "small": dict(z_dim=256, w_dim=256, mapping_layers=2, channel_base=2048, channel_max=128),
    "stylegan2": dict(z_dim=512, w_dim=512, mapping_layers=2, channel_base=16384, channel_max=512),
    # stylegan2-ada-pytorch train.py cfg_specs["paper256"]: fmaps 0.5 (cbase 16384), map 8
    "paper256": dict(z_dim=512, w_dim=512, mapping_layers=8, channel_base=16384, channel_max=512),
}


def channels_per_resolution(resolution: int, channel_base: int, channel_max: int) -> dict:
    return {
        2**i: min(channel_base // 2**i, channel_max)
        for i in range(2, int(math.log2(resolution)) + 1)
    }


def reduced_precision_from(resolution: int, num_fp16_res: int) -> int:
    """Lowest resolution that runs in reduced precision (StyleGAN2-ADA: the top num_fp16_res)."""
    return max(2 ** (int(math.log2(resolution)) + 1 - num_fp16_res), 8) if num_fp16_res else 1 << 30


# StyleGAN, sec. 2: z -> w through an MLP; w_avg tracks E[w] for the truncation trick
class MappingNetwork(nn.Module):
    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 2,
        lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        self.num_ws, self.w_avg_beta = num_ws, w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            layer = FullyConnected(dims[i], dims[i + 1], "lrelu", lr_multiplier=lr_multiplier)
            setattr(self, f"fc{i}", layer)
        self.num_layers = num_layers
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor,
        psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        x = z.float() * (z.float().square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)  # (B, w_dim)
        if update_w_avg:
            with torch.no_grad():
                # in x's dtype: DeepSpeed's bf16 casts this buffer, not the fp32 mapping output
                mean = x.detach().mean(dim=0)
                self.w_avg.copy_(mean.lerp(self.w_avg.to(mean.dtype), self.w_avg_beta))
        ws = x[:, None].repeat(1, self.num_ws, 1)  # (B, num_ws, w_dim)
        if psi != 1.0:  # StyleGAN, sec. 3.1: truncation w' = w_avg + psi (w - w_avg)
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws = torch.cat([self.w_avg.to(ws.dtype).lerp(ws[:, :cut], psi), ws[:, cut:]], dim=1)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+ optional 2x upsampling), per-pixel noise, bias, leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: bool = False,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.noise_strength = nn.Parameter(torch.zeros(1))  # 1-d: DeepSpeed broadcasts bytes
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", lowpass_filter() if up else None)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        styles = self.affine(w)  # (B, in_channels)
        x = modulated_conv2d(
            x, self.weight.to(x.dtype), styles, up=self.up, resample_filter=self.resample_filter
        )
        if noise_mode == "random":
            shape = (x.shape[0], 1, self.resolution, self.resolution)
            x = x + torch.randn(shape, device=x.device, dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        return bias_act(x, self.bias, "lrelu", clamp=self.conv_clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB, without demodulation."""

    def __init__(self, in_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(3, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(3))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight.to(x.dtype), styles, demodulate=False)
        return bias_act(x, self.bias, "linear", clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (up)conv, conv, toRGB added to the upsampled image."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        reduced_precision: bool,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.in_channels, self.reduced_precision = in_channels, reduced_precision
        clamp = conv_clamp  # every layer, fp32 blocks too, as StyleGAN2-ADA does
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, True, clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, False, clamp)
        self.torgb = ToRGB(out_channels, w_dim, clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.register_buffer("resample_filter", lowpass_filter())

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = dtype if self.reduced_precision else torch.float32
        if self.in_channels == 0:
            x = self.const.to(dtype)[None].repeat(ws.shape[0], 1, 1, 1)  # (B, C, 4, 4)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            x = self.conv0(x.to(dtype), ws[:, 0], noise_mode)  # (B, C, 2H, 2W)
            x = self.conv1(x, ws[:, 1], noise_mode)
        y = self.torgb(x, ws[:, self.num_conv]).float()
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(
        self,
        w_dim: int,
        resolution: int,
        channels: dict[int, int],
        num_fp16_res: int,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.resolutions = sorted(channels)
        lowest_reduced = reduced_precision_from(resolution, num_fp16_res)
        self.num_ws = 0
        for res in self.resolutions:
            block = SynthesisBlock(
                channels.get(res // 2, 0),
                channels[res],
                w_dim,
                res,
                reduced_precision=res >= lowest_reduced,
                conv_clamp=conv_clamp,
            )
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last toRGB

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "random", dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        x = img = None
        w_idx = 0
        for res in self.resolutions:  # a block's toRGB shares its w with the next block's conv0
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + 1], noise_mode, dtype)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """G(z): (B, z_dim) -> (B, 3, R, R), roughly in [-1, 1]."""

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        resolution: int,
        mapping_layers: int = 2,
        channel_base: int = 16384,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = 256.0,
        reduced_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.resolution = z_dim, w_dim, resolution
        self.reduced_dtype = reduced_dtype
        channels = channels_per_resolution(resolution, channel_base, channel_max)
        self.synthesis = SynthesisNetwork(w_dim, resolution, channels, num_fp16_res, conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers)

    def forward(
        self,
        z: torch.Tensor,
        psi: float = 1.0,
        truncation_cutoff: int | None = None,
        mixing_prob: float = 0.0,
        noise_mode: str = "random",
        return_ws: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        ws = self.mapping(z, psi, truncation_cutoff, update_w_avg=self.training)
        if mixing_prob > 0:  # StyleGAN, sec. 3.1: style mixing regularisation
            # as StyleGAN2-ADA's loss does it: the second mapping always runs and a batch that
            # does not mix takes cutoff = num_ws, so forward and backward have the same graph
            # whatever this rank's coin says (under ZeRO-3 every module's forward and backward
            # gathers its parameters collectively: a graph that differs by rank hangs)
            cutoff = int(torch.randint(1, self.num_ws, ()))
            ws_other = self.mapping(torch.randn_like(z))
            if float(torch.rand(())) >= mixing_prob:
                cutoff = self.num_ws
            ws = mix_styles(ws, ws_other, cutoff)
        img = self.synthesis(ws, noise_mode, self.reduced_dtype)
        return (img, ws) if return_ws else img


def mix_styles(ws: torch.Tensor, ws_other: torch.Tensor, cutoff: int) -> torch.Tensor:
    """Layers before `cutoff` take ws, the rest take ws_other: (B, num_ws, w_dim)."""
    return torch.cat([ws[:, :cutoff], ws_other[:, cutoff:]], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (the second downsamples) plus a 1x1 skip, scaled by 1/sqrt2."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        reduced_precision: bool,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.in_channels, self.reduced_precision = in_channels, reduced_precision
        clamp = conv_clamp  # every layer but the linear skip, as StyleGAN2-ADA does
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(3, tmp_channels, 1, conv_clamp=clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, conv_clamp=clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, down=True, conv_clamp=clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, "linear", bias=False, down=True)

    def forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        dtype = dtype if self.reduced_precision else torch.float32
        x = x.to(dtype)
        if self.in_channels == 0:
            x = self.fromrgb(x)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x  # (B, C_out, H/2, W/2)


# Karras et al. 2018 (ProGAN), sec. 3: minibatch standard deviation as an extra feature map
class MinibatchStd(nn.Module):
    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        f = self.num_channels
        y = x.float().reshape(g, -1, f, c // f, h, w)  # (G, N/G, F, C/F, H, W)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=[2, 3, 4])  # (N/G, F)
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # (N, F, H, W)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorEpilogue(nn.Module):
    def __init__(
        self, channels: int, mbstd_group_size: int = 4, conv_clamp: float | None = None
    ) -> None:
        super().__init__()
        self.mbstd = MinibatchStd(mbstd_group_size)
        self.conv = Conv2dLayer(channels + 1, channels, 3, conv_clamp=conv_clamp)
        self.fc = FullyConnected(channels * 16, channels, "lrelu")
        self.out = FullyConnected(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.mbstd(x.float()))  # (B, C, 4, 4)
        return self.out(self.fc(x.flatten(1))).squeeze(1)  # (B,)


class Discriminator(nn.Module):
    """D(x): (B, 3, R, R) -> (B,) logits."""

    def __init__(
        self,
        resolution: int,
        channel_base: int = 16384,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = 256.0,
        mbstd_group_size: int = 4,
        reduced_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.reduced_dtype = reduced_dtype
        channels = channels_per_resolution(resolution, channel_base, channel_max)
        lowest_reduced = reduced_precision_from(resolution, num_fp16_res)
        self.resolutions = sorted(channels, reverse=True)[:-1]  # R .. 8; b4 is the epilogue
        for res in self.resolutions:
            in_channels = channels[res] if res < resolution else 0
            block = DiscriminatorBlock(
                in_channels, channels[res], channels[res // 2], res >= lowest_reduced, conv_clamp
            )
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(channels[4], mbstd_group_size, conv_clamp)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img
        for res in self.resolutions:
            x = getattr(self, f"b{res}")(x, self.reduced_dtype)
        return self.b4(x)


def build_gan(
    preset: str,
    resolution: int,
    num_fp16_res: int = 0,
    reduced_dtype: torch.dtype = torch.float32,
    conv_clamp: float | None = 256.0,
    mbstd_group_size: int = 4,
) -> tuple[Generator, Discriminator]:
    p = PRESETS[preset]
    common = dict(
        channel_base=p["channel_base"],
        channel_max=p["channel_max"],
        num_fp16_res=num_fp16_res,
        conv_clamp=conv_clamp,
        reduced_dtype=reduced_dtype,
    )
    generator = Generator(p["z_dim"], p["w_dim"], resolution, p["mapping_layers"], **common)
    return generator, Discriminator(resolution, mbstd_group_size=mbstd_group_size, **common)
