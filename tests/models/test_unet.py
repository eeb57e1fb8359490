"""The ADM-style U-Net: shapes, preset sizes, and that it can learn (overfits 8 images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcgen.data.synthetic import toy_bedroom
from hpcgen.diffusion.gaussian import Diffusion, linear_betas, training_losses
from hpcgen.models.unet import build_unet

# the counts README documents (learned variance: 6 output channels)
PRESET_PARAMETERS = {
    ("tiny", 16): 182_134,
    ("small", 32): 1_119_398,
    ("lsun64", 64): 87_751_814,
    ("lsun256", 256): 118_009_350,
}


@pytest.mark.parametrize("preset,resolution", list(PRESET_PARAMETERS))
def test_preset_sizes_are_the_documented_ones(preset, resolution):
    net = build_unet(preset, out_channels=6, resolution=resolution)
    assert sum(p.numel() for p in net.parameters()) == PRESET_PARAMETERS[preset, resolution]


@pytest.mark.parametrize("out_channels", [3, 6])
def test_output_shape_and_zero_initial_output(out_channels):
    net = build_unet("small", out_channels, resolution=32)
    out = net(torch.randn(2, 3, 32, 32), torch.tensor([0, 999]))
    assert out.shape == (2, out_channels, 32, 32)
    assert out.abs().max() == 0  # ADM's zero-initialised output: training starts at L = E[eps^2]


@pytest.mark.slow
def test_tiny_unet_overfits_eight_images():
    torch.manual_seed(0)
    images = torch.stack([torch.from_numpy(np.array(toy_bedroom(i, 16))) for i in range(8)])
    images = images.permute(0, 3, 1, 2).float() / 127.5 - 1  # (8, 3, 16, 16)
    net = build_unet("tiny", 3, resolution=16)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    d = Diffusion.from_betas(linear_betas(100))
    g = torch.Generator().manual_seed(0)

    def loss_now() -> float:  # fixed t and noise, so the curve measures the model only
        gen = torch.Generator().manual_seed(123)
        t = torch.arange(8) * 12
        noise = torch.randn(images.shape, generator=gen)
        with torch.no_grad():
            return training_losses(d, net, images, t, noise)["loss"].mean().item()

    start = loss_now()
    for _ in range(800):
        t = torch.randint(0, d.T, (8,), generator=g)
        loss = training_losses(d, net, images, t, torch.randn(images.shape, generator=g))["loss"]
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    assert loss_now() < start / 10, (start, loss_now())
