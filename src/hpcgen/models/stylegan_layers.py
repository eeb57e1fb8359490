"""StyleGAN2's building blocks in plain PyTorch (no custom CUDA ops): equalised-lr layers,
FIR resampling, modulated convolution.

Karras et al. 2020 (StyleGAN2), sec. 2.2 and appendix B; equalised learning rate from
Karras et al. 2018 (ProGAN), sec. 4.1: weights are stored N(0, 1) and scaled at run time.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LRELU_GAIN = math.sqrt(2.0)


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str,
    gain: float = 1.0,
    clamp: float | None = None,
) -> torch.Tensor:
    """x + b, then leaky ReLU (slope 0.2, gain sqrt(2)) or identity, times gain, clamped."""
    if bias is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + bias.to(x.dtype).reshape(shape)
    if activation == "lrelu":
        x = F.leaky_relu(x, 0.2) * (LRELU_GAIN * gain)
    elif gain != 1.0:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


# StyleGAN2, appendix B: [1, 3, 3, 1] binomial low-pass filter before down-/after upsampling
def lowpass_filter(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)) -> torch.Tensor:
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()  # (k, k), unit DC gain


def fir_filter(
    x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int], gain: float = 1.0
) -> torch.Tensor:
    """Depthwise 2-D FIR filter with (before, after) padding on both axes."""
    channels = x.shape[1]
    weight = (f * gain).to(x.dtype).flip([0, 1])[None, None].repeat(channels, 1, 1, 1)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, weight, groups=channels)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Low-pass, then keep every second pixel: (B, C, H, W) -> (B, C, H/2, W/2)."""
    k = f.shape[0]
    return fir_filter(x, f, ((k - 1) // 2, k // 2 - 1))[:, :, ::2, ::2]


# StyleGAN2-ADA (torch_utils/ops/conv2d_resample.py): a k x k stride-2 convolution behind an
# f-tap blur pads the blur by k // 2 + (f - 1) // 2 before, k // 2 + (f - 2) // 2 after, and the
# convolution not at all; (2, 2) for k = 3, f = 4
def strided_blur_padding(kernel_size: int, f: torch.Tensor) -> tuple[int, int]:
    """(before, after) padding of the blur, so that the strided conv needs none and output
    pixel i of every branch sits over input pixels 2i and 2i + 1, like downsample2d's."""
    taps, down = f.shape[0], 2
    return (
        kernel_size // 2 + (taps - down + 1) // 2,
        kernel_size // 2 + (taps - down) // 2,
    )


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Zero insertion, then low-pass with gain 4: (B, C, H, W) -> (B, C, 2H, 2W)."""
    b, c, h, w = x.shape
    x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, 1, 0, 0, 0, 1]).reshape(b, c, 2 * h, 2 * w)
    k = f.shape[0]
    return fir_filter(x, f, (k // 2, (k - 1) // 2), gain=4.0)


class FullyConnected(nn.Module):
    """Equalised-lr linear layer; lr_multiplier scales both the weight and the bias."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        return bias_act(F.linear(x, w), b, self.activation)


class Conv2dLayer(nn.Module):
    """Equalised-lr convolution, optionally downsampling by 2 behind a low-pass filter."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        activation: str = "lrelu",
        bias: bool = True,
        down: bool = False,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.register_buffer("resample_filter", lowpass_filter() if down else None)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        k = w.shape[-1]
        if self.down and k == 1:
            x = F.conv2d(downsample2d(x, self.resample_filter), w)
        elif self.down:  # blur at full resolution, then a strided convolution
            x = fir_filter(x, self.resample_filter, strided_blur_padding(k, self.resample_filter))
            x = F.conv2d(x, w, stride=2)  # (B, O, H/2, W/2)
        else:
            x = F.conv2d(x, w, padding=k // 2)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, gain=gain, clamp=clamp)


# StyleGAN2, sec. 2.2 eq. 1-3: modulate input channels by the style, demodulate outputs
def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: bool = False,
    resample_filter: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (B, I, H, W), weight (O, I, k, k), styles (B, I) -> (B, O, H', W').

    Applies the style to the activations instead of the weights (StyleGAN2's non-fused path),
    so one ordinary convolution serves the whole batch.
    """
    k = weight.shape[-1]
    x = x * styles.to(x.dtype)[:, :, None, None]
    if up:  # transposed conv with stride 2, then the low-pass filter (gain 4): 2H x 2W
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        x = fir_filter(x, resample_filter, (1, 1), gain=4.0)
    else:
        x = F.conv2d(x, weight, padding=k // 2)
    if demodulate:
        w = weight[None] * styles.to(weight.dtype)[:, None, :, None, None]  # (B, O, I, k, k)
        dcoefs = (w.float().square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (B, O)
        x = x * dcoefs.to(x.dtype)[:, :, None, None]
    return x
