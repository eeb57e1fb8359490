"""The engine suite's levers: one plain U-Net training step (forward, backward, AdamW) with one
thing changed at a time, timed in turns against the unchanged step on the same network copy
and batch: channels_last memory format, AdamW's fused and single-tensor (for-loop) kernels
against its default foreach one, and the attention blocks' math kernel against the fused one
that F.scaled_dot_product_attention picks.

Activation checkpointing is its own case, on a network of its own size (lsun256 at 256 px: the
lever is for large presets): the step's time on and off in turns, and its memory on and off
counted by benchmarks/memory.py (peak tensor bytes of forward+backward, bytes saved for the
backward), which the machine's load does not move."""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from hpcgen.benchmarks.common import measure_in_turns
from hpcgen.benchmarks.memory import step_memory
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
    preset: str,
    resolution: int,
    batch: int,
    repeats: int,
    dev: torch.device,
    activation_checkpointing: dict | None = None,
) -> dict:
    """The levers above on `preset`; `activation_checkpointing` ({preset, resolution, batch,
    repeats}) adds that lever's case."""
    result = {"config": {"preset": preset, "resolution": resolution, "batch": batch}}
    torch.manual_seed(0)
    net = build_unet(preset, 3, resolution).to(dev)
    x = torch.randn(batch, 3, resolution, resolution, device=dev)
    t = torch.randint(0, 1000, (batch,), device=dev)
    steps = {name: _step(net, *lever, x, t) for name, lever in LEVERS.items()}
    timings = measure_in_turns(steps, repeats, warmup=1)
    base = timings["baseline"]["median"]
    result["seconds"] = timings
    result["vs_baseline"] = {name: timings[name]["median"] / base for name in LEVERS}
    if activation_checkpointing:
        del net, steps  # the large case's memory is its own
        result["activation_checkpointing"] = measure_checkpointing(
            dev=dev, **activation_checkpointing
        )
    return result


def measure_checkpointing(
    preset: str, resolution: int, batch: int, repeats: int, dev: torch.device
) -> dict:
    """model.activation_checkpointing off and on: seconds per step in turns (off, on, off, on,
    ...; `on_vs_off` per turn too, whose spread says how much the machine's load moved them) and
    the forward+backward's counted memory each way."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, resolution, resolution, device=dev)
    t = torch.randint(0, 1000, (batch,), device=dev)
    nets = {
        name: build_unet(preset, 3, resolution, activation_checkpointing=on).to(dev)
        for name, on in (("off", False), ("on", True))
    }
    nets["on"].load_state_dict(nets["off"].state_dict())
    memory = {
        name: step_memory(lambda n=net: (n(x, t) - x).square().mean()) for name, net in nets.items()
    }
    for net in nets.values():
        net.zero_grad(set_to_none=True)
    steps = {name: _step(nets.pop(name), *LEVERS["baseline"], x, t) for name in ("off", "on")}
    timings = measure_in_turns(steps, repeats, warmup=1)
    off, on = timings["off"]["seconds"], timings["on"]["seconds"]
    per_turn = [b / a for a, b in zip(off, on, strict=True)]
    return {
        "config": {"preset": preset, "resolution": resolution, "batch": batch},
        "seconds": timings,
        "on_vs_off": timings["on"]["median"] / timings["off"]["median"],
        "on_vs_off_per_turn": {"ratios": per_turn, "min": min(per_turn), "max": max(per_turn)},
        "memory": memory,
        **{
            f"{k}_on_vs_off": memory["on"][k] / memory["off"][k]
            for k in ("peak_bytes", "saved_bytes")
        },
    }
