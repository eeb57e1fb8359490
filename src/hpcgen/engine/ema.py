"""Exponential moving average of a network's weights, kept in fp32 beside the engine and used
for samples and evaluation. Under ZeRO-3 the partitioned parameters are gathered to update it.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
from torch import nn


# Improved DDPM / ADM: rate 0.9999 with the warm-up min(decay, (1 + n) / (10 + n))
def ddpm_ema_beta(decay: float, step: int) -> float:
    return min(decay, (1 + step) / (10 + step))


# StyleGAN2-ADA, training_loop.py: half-life in images, ramped up with the images seen
def gan_ema_beta(batch: int, images_seen: int, halflife_kimg: float, rampup: float) -> float:
    halflife = halflife_kimg * 1000
    if rampup > 0:
        halflife = min(halflife, images_seen * rampup)
    return 0.5 ** (batch / max(halflife, 1e-8))


class EMA:
    """An fp32 copy of a plain module (made before DeepSpeed wraps it), updated in place."""

    def __init__(self, module: nn.Module) -> None:
        self.module = copy.deepcopy(module).float().eval().requires_grad_(False)

    def to(self, device: torch.device) -> EMA:
        self.module.to(device)
        return self

    @torch.no_grad()
    def update(self, source: nn.Module, beta: float, zero_stage: int = 0) -> None:
        params = list(source.parameters())
        gather: Any = contextlib.nullcontext()
        if zero_stage == 3:
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(params)
        with gather:
            for mine, theirs in zip(self.module.parameters(), params, strict=True):
                mine.lerp_(theirs.detach().to(mine.dtype), 1 - beta)
        for mine, theirs in zip(self.module.buffers(), source.buffers(), strict=True):
            mine.copy_(theirs)  # running statistics such as w_avg are averages already

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
