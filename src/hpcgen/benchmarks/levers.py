"""The engine suite's levers: one plain U-Net training step (forward, backward, AdamW) with one
thing changed at a time, timed in turns against the unchanged step on the same network copy
and batch: channels_last memory format, AdamW's fused and single-tensor (for-loop) kernels
against its default foreach one, and the attention blocks' math kernel against the fused one
that F.scaled_dot_product_attention picks."""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from hpcgen.benchmarks.common import measure_in_turns
from hpcgen.models.unet import build_unet

# lever -> (memory format, AdamW keyword arguments, attention context)
LEVERS: dict[str, tuple[torch.memory_format, dict, Callable]] = {
    "baseline": (torch.contiguous_format, {}, nullcontext),
    "channels_last": (torch.channels_last, {}, nullcontext),
    "adamw_fused": (torch.contiguous_format, {"fused": True}, nullcontext),
    "adamw_for_loop": (torch.contiguous_format, {"foreach": False}, nullcontext),
    "attention_math": (torch.contiguous_format, {}, lambda: sdpa_kernel(SDPBackend.MATH)),
}


def _step(net: torch.nn.Module, fmt, opt_kwargs: dict, context, x, t) -> Callable[[], None]:
    net = copy.deepcopy(net).to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, **opt_kwargs)

    def step() -> None:
        with context():
            (net(x, t) - x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def measure_levers(
    preset: str, resolution: int, batch: int, repeats: int, dev: torch.device
) -> dict:
    torch.manual_seed(0)
    net = build_unet(preset, 3, resolution).to(dev)
    x = torch.randn(batch, 3, resolution, resolution, device=dev)
    t = torch.randint(0, 1000, (batch,), device=dev)
    steps = {name: _step(net, *lever, x, t) for name, lever in LEVERS.items()}
    timings = measure_in_turns(steps, repeats, warmup=1)
    base = timings["baseline"]["median"]
    return {
        "config": {"preset": preset, "resolution": resolution, "batch": batch},
        "seconds": timings,
        "vs_baseline": {name: timings[name]["median"] / base for name in LEVERS},
    }
