"""The networks a run trains, built from its config, and the one sampler of images from them:
training's sample grids, launch/generate.py and evaluation all call these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hpcgen.config import DDPMConfig, GANConfig, TrainConfig
from hpcgen.diffusion.gaussian import Diffusion, ddim_sample, ddpm_sample, parse_sampler, respace
from hpcgen.gan.choices import REDUCED_PRECISIONS
from hpcgen.gan.interpolate import seeded_latents
from hpcgen.models import stylegan
from hpcgen.models.unet import build_unet

# the engine whose (EMA) weights make images
SAMPLING_NETWORK = {"ddpm": "unet", "gan": "generator"}


def output_channels(variance: str) -> int:
    """Improved DDPM, sec. 3.1: learned_range predicts the variance's interpolation weight v
    beside eps, so the U-Net has 6 output channels; fixed variances need 3."""
    return 6 if variance == "learned_range" else 3


def reduced_dtype(mcfg: GANConfig, cuda: bool) -> torch.dtype:
    """The dtype of the GAN's top blocks: auto = bf16 on a GPU, fp32 on the CPU (bf16
    convolutions on the CPU are two orders of magnitude slower than fp32 ones)."""
    choice = mcfg.reduced_precision
    if choice == "auto":
        choice = "bf16" if cuda else "none"
    return getattr(torch, REDUCED_PRECISIONS[choice])


def gan_networks(
    mcfg: GANConfig, resolution: int, cuda: bool
) -> tuple[stylegan.Generator, stylegan.Discriminator]:
    dtype = reduced_dtype(mcfg, cuda)
    return stylegan.build_gan(
        mcfg.preset,
        resolution,
        num_fp16_res=mcfg.num_fp16_res if dtype != torch.float32 else 0,
        reduced_dtype=dtype,
        conv_clamp=mcfg.conv_clamp,
        mbstd_group_size=mcfg.mbstd_group,
    )


def build_networks(cfg: TrainConfig, cuda: bool, training: bool = True) -> dict[str, nn.Module]:
    """The run's networks by engine name: {"unet"} or {"generator", "discriminator"}.
    training=False: a network that only samples (model.activation_checkpointing left off)."""
    m = cfg.model
    if isinstance(m, DDPMConfig):
        recompute = training and m.activation_checkpointing
        unet = build_unet(m.preset, output_channels(m.variance), cfg.data.resolution, recompute)
        return {"unet": unet}
    generator, discriminator = gan_networks(m, cfg.data.resolution, cuda)
    return {"generator": generator, "discriminator": discriminator}


def compile_networks(*networks: nn.Module) -> None:
    """torch.compile each network in place (nn.Module.compile: its state_dict keys, and so its
    checkpoints, stay those of the plain module)."""
    for net in networks:
        net.compile()


def eager(net: nn.Module) -> Callable[..., Any]:
    """The network's uncompiled forward: for penalties that differentiate twice (R1, WGAN-GP,
    path length), which compiled graphs do not support. The plain module when not compiled."""
    return net.forward if getattr(net, "_compiled_call_impl", None) is not None else net


def build_sampling_network(cfg: TrainConfig, cuda: bool) -> tuple[str, nn.Module]:
    """(engine name, network) of the network that makes images (a generator alone is built)."""
    name = SAMPLING_NETWORK[cfg.model.name]
    if isinstance(cfg.model, GANConfig):
        return name, gan_networks(cfg.model, cfg.data.resolution, cuda)[0]
    return name, build_networks(cfg, cuda, training=False)[name]


@torch.no_grad()
def sample(
    cfg: TrainConfig,
    net: nn.Module,
    seeds: list[int],
    device: torch.device,
    sampler: str | None = None,
    truncation_psi: float | None = None,
    batch: int = 64,
    exact_per_seed: bool = True,
) -> torch.Tensor:
    """(len(seeds), 3, R, R) in [-1, 1] on the CPU; image i depends on seeds[i] only.

    DDPM: `sampler` (default the run's model.sampler); GAN: truncation `truncation_psi`
    (default the run's). exact_per_seed runs the GAN one image at a time: convolution kernels
    picked per batch size differ in the last bits, enough to move a pixel across a rounding
    step. Training's grids and evaluation turn it off for speed. `net` runs in eval mode and
    gets its mode back."""
    was_training = net.training
    net.eval()
    try:
        if isinstance(cfg.model, DDPMConfig):
            images = _ddpm_images(cfg, net, seeds, device, sampler, batch)
        else:
            images = _gan_images(cfg, net, seeds, device, truncation_psi, batch, exact_per_seed)
    finally:
        net.train(was_training)
    return images


def _ddpm_images(
    cfg: TrainConfig,
    net: nn.Module,
    seeds: list[int],
    device: torch.device,
    sampler: str | None,
    batch: int,
) -> torch.Tensor:
    m = cfg.model
    assert isinstance(m, DDPMConfig)
    kind, steps = parse_sampler(sampler or m.sampler)
    d = respace(Diffusion.from_schedule(m.schedule, m.diffusion_steps), steps or m.diffusion_steps)
    run = ddim_sample if kind == "ddim" else ddpm_sample
    extra = {"eta": m.ddim_eta} if kind == "ddim" else {}
    dtype = next(net.parameters()).dtype

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return net(x.to(dtype), t).float()

    shape = (3, cfg.data.resolution, cfg.data.resolution)
    images = []
    for start in range(0, len(seeds), batch):
        chunk = seeds[start : start + batch]
        images.append(
            run(
                d,
                model,
                shape,
                chunk,
                parameterisation=m.parameterisation,
                variance=m.variance,
                device=device,
                clip=m.clip_x0,
                **extra,
            ).cpu()
        )
    return torch.cat(images)


def _gan_images(
    cfg: TrainConfig,
    net: nn.Module,
    seeds: list[int],
    device: torch.device,
    truncation_psi: float | None,
    batch: int,
    exact_per_seed: bool,
) -> torch.Tensor:
    psi = cfg.model.truncation_psi if truncation_psi is None else truncation_psi
    images = []
    for start in range(0, len(seeds), batch):
        z = seeded_latents(seeds[start : start + batch], net.z_dim).to(device)
        for part in z.split(1 if exact_per_seed else batch):
            images.append(net(part, psi=psi, noise_mode="const").float().cpu())
    return torch.cat(images)
