"""Sampling suite: DDIM-50 against the full DDPM-1000 chain on one U-Net and batch: network
evaluations and wall time (target: DDIM's wall time at most 0.06 of DDPM's)."""

from __future__ import annotations

from pathlib import Path

import torch

from hpcgen.benchmarks.common import device, measure
from hpcgen.diffusion.gaussian import Diffusion, ddim_sample, ddpm_sample, respace
from hpcgen.models.unet import build_unet


def run(
    workdir: Path,
    preset: str,
    resolution: int,
    batch: int,
    ddim_steps: int,
    repeats: int,
    full_steps: int = 1000,
) -> dict:
    dev = device()
    net = build_unet(preset, 3, resolution).to(dev).eval()
    calls = {"n": 0}

    @torch.no_grad()
    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return net(x, t)

    full = Diffusion.from_schedule("linear", full_steps)
    fast = respace(full, ddim_steps)
    seeds, shape = list(range(batch)), (3, resolution, resolution)
    out = {}
    for name, fn in {
        "ddpm_full": lambda: ddpm_sample(full, model, shape, seeds, device=dev),
        f"ddim{ddim_steps}": lambda: ddim_sample(fast, model, shape, seeds, device=dev),
    }.items():
        calls["n"] = 0
        fn()
        evaluations = calls["n"]
        out[name] = {"network_evaluations": evaluations, **measure(fn, repeats, warmup=0)}
    ddim = out[f"ddim{ddim_steps}"]
    return {
        "config": {
            "preset": preset,
            "resolution": resolution,
            "batch": batch,
            "full_steps": full_steps,
        },
        **out,
        "ratio_wall": ddim["median"] / out["ddpm_full"]["median"],
        "ratio_evaluations": ddim["network_evaluations"] / out["ddpm_full"]["network_evaluations"],
        "targets": {"ratio_wall": "<= 0.06"},
    }
