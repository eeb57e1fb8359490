"""EMA of the weights: the decay schedules, the update, and that samples come from it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hpcgen.engine.ema import EMA, ddpm_ema_beta, gan_ema_beta


def test_ddpm_decay_warms_up_to_its_rate():
    assert ddpm_ema_beta(0.9999, 0) == pytest.approx(0.1)
    assert ddpm_ema_beta(0.9999, 90) == pytest.approx(0.91)
    assert ddpm_ema_beta(0.9999, 10**7) == 0.9999


def test_gan_half_life_halves_the_old_weights_after_that_many_images():
    beta = gan_ema_beta(batch=64, images_seen=10**7, halflife_kimg=10.0, rampup=0.05)
    assert beta ** (10_000 / 64) == pytest.approx(0.5)
    # ramp-up: early on the half-life is 5% of the images seen, so the EMA follows closely
    assert gan_ema_beta(64, 6400, 10.0, 0.05) == pytest.approx(0.5 ** (64 / 320))


def test_update_moves_toward_the_source_and_copies_buffers():
    source = nn.BatchNorm1d(3)
    ema = EMA(source)
    with torch.no_grad():
        source.weight.fill_(3.0)
        source.running_mean.fill_(7.0)
    ema.update(source, beta=0.75)
    assert torch.allclose(ema.module.weight, torch.full((3,), 1.5))  # 1 + 0.25 * (3 - 1)
    assert torch.equal(ema.module.running_mean, source.running_mean)
    assert not ema.module.weight.requires_grad and ema.module.weight.dtype == torch.float32
    restored = EMA(nn.BatchNorm1d(3))
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.module.weight, ema.module.weight)
