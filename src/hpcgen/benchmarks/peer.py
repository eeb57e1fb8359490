"""Peer suite: our DDPM training step against the Hugging Face diffusers step the report used
(UNet2DModel + DDPMScheduler.add_noise + MSE on the noise, torch AdamW), at the same resolution
and batch, the diffusers U-Net's width chosen to match our parameter count within 10%.
Target: our images/s at least 1.0x theirs. Needs the `bench` extra (pip install -e '.[bench]')."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch.nn import functional as F

from hpcgen.benchmarks.common import device, measure_in_turns
from hpcgen.benchmarks.utilisation import count_flops, peak_rates
from hpcgen.config import DeepSpeedConfig
from hpcgen.diffusion.gaussian import Diffusion, training_losses
from hpcgen.engine.deepspeed_engine import make_engine
from hpcgen.engine.distributed import detect_layout, init_distributed
from hpcgen.models.unet import PRESETS, build_unet


def _diffusers_unet(preset: str, resolution: int, width: int):
    """A UNet2DModel shaped like our preset: same levels, blocks per level, attention levels."""
    from diffusers import UNet2DModel

    p = PRESETS[preset]
    sizes = [resolution // 2**i for i in range(len(p.mult))]
    attention = [size in p.attention_resolutions for size in sizes]
    return UNet2DModel(
        sample_size=resolution,
        in_channels=3,
        out_channels=3,
        layers_per_block=p.res_blocks,
        block_out_channels=tuple(width * m for m in p.mult),
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        norm_num_groups=8,
        dropout=p.dropout,
    )


def matched_peer(preset: str, resolution: int, target: int) -> tuple[torch.nn.Module, int]:
    """The diffusers U-Net whose parameter count is closest to `target` (widths by 8)."""
    best = None
    for width in range(8, 8 * 65, 8):
        net = _diffusers_unet(preset, resolution, width)
        count = sum(p.numel() for p in net.parameters())
        if best is None or abs(count - target) < abs(best[1] - target):
            best = (net, count, width)
        if count > target * 1.2:
            break
    net, count, width = best
    if abs(count - target) > 0.1 * target:
        raise RuntimeError(
            f"no diffusers UNet2DModel within 10% of our {target:,} parameters "
            f"(closest: width {width}, {count:,}): choose another peer.preset"
        )
    return net, width


def run(
    workdir: Path, preset: str, resolution: int, batch: int, repeats: int, matmul_size: int = 2048
) -> dict:
    try:
        from diffusers import DDPMScheduler
    except ImportError as err:
        raise SystemExit(
            f"hpcgen: error: suite=peer needs diffusers ({err}): pip install -e '.[bench]'"
        ) from err
    init_distributed(detect_layout())
    dev = device()
    torch.manual_seed(0)
    ours = build_unet(preset, 3, resolution)
    n_ours = sum(p.numel() for p in ours.parameters())
    theirs, width = matched_peer(preset, resolution, n_ours)
    n_theirs = sum(p.numel() for p in theirs.parameters())
    x0 = torch.rand(batch, 3, resolution, resolution, device=dev) * 2 - 1
    t = torch.randint(0, 1000, (batch,), device=dev)
    noise = torch.randn_like(x0)
    steps = _steps(ours, theirs, DDPMScheduler, x0, t, noise, batch, dev)
    flops = {"hpcgen": count_flops(steps["hpcgen_plain"]),
             "diffusers": count_flops(steps["diffusers"])}  # fmt: skip
    timings = measure_in_turns(steps, repeats, warmup=2)
    images_per_s = {k: batch / v["median"] for k, v in timings.items()}
    peak = peak_rates(dev, matmul_size, repeats=5)
    rate = peak["matmul"]["flops_per_s"]
    network = {"hpcgen_plain": "hpcgen", "hpcgen_deepspeed_stage0": "hpcgen",
               "diffusers": "diffusers"}  # fmt: skip
    utilisation = {k: flops[net] / timings[k]["median"] / rate for k, net in network.items()}
    return {
        "peak": peak,
        "flops_per_step": flops,
        "utilisation": utilisation,
        "hpcgen_stage0_vs_diffusers": images_per_s["hpcgen_deepspeed_stage0"]
        / images_per_s["diffusers"],
        "config": {"preset": preset, "resolution": resolution, "batch": batch},
        "parameters": {"hpcgen": n_ours, "diffusers": n_theirs, "diffusers_width": width},
        "parameter_ratio": n_theirs / n_ours,
        **timings,
        "images_per_s": images_per_s,
        "hpcgen_plain_vs_diffusers": images_per_s["hpcgen_plain"] / images_per_s["diffusers"],
        "hpcgen_zero2_vs_diffusers": images_per_s["hpcgen_deepspeed_zero2"]
        / images_per_s["diffusers"],
        "targets": {"hpcgen_vs_diffusers": ">= 1.0", "parameter_ratio": "0.9 .. 1.1"},
    }


def _steps(ours, theirs, scheduler_kind, x0, t, noise, batch: int, dev) -> dict:
    """The same DDPM batch through diffusers' step, ours on plain AdamW, ours under DeepSpeed."""
    diffusion = Diffusion.from_schedule("linear", 1000)
    scheduler = scheduler_kind(num_train_timesteps=1000, beta_schedule="linear")

    ours_plain = copy.deepcopy(ours).to(dev)
    opt_ours = torch.optim.AdamW(ours_plain.parameters(), lr=1e-4)

    def our_step() -> None:  # hpcgen's loss function: eps, fixed variance, simple MSE
        terms = training_losses(diffusion, ours_plain, x0, t, noise, "eps", "fixed_small", "simple")
        terms["loss"].mean().backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def deepspeed_step(stage: int):
        cfg = DeepSpeedConfig(zero_stage=stage)
        engine = make_engine(copy.deepcopy(ours), 1e-4, (0.9, 0.999), 0.0, cfg, batch, 1)

        def step() -> None:
            terms = training_losses(diffusion, engine, x0, t, noise, "eps", "fixed_small", "simple")
            engine.backward(terms["loss"].mean())
            engine.step()

        return step

    theirs = theirs.to(dev)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-4)

    def their_step() -> None:  # the diffusers training example's step
        noisy = scheduler.add_noise(x0, noise, t)
        F.mse_loss(theirs(noisy, t).sample, noise).backward()
        opt_theirs.step()
        opt_theirs.zero_grad(set_to_none=True)

    steps = {
        "diffusers": their_step,
        "hpcgen_plain": our_step,
        # what launch/train.py runs on one rank (stage 0), and ZeRO-2 (its default on more)
        "hpcgen_deepspeed_stage0": deepspeed_step(0),
        "hpcgen_deepspeed_zero2": deepspeed_step(2),
    }
    return steps
