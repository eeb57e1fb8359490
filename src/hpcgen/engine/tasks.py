"""What one training step means for each model: the DDPM's one engine here, the GAN's two in
gan_task.py."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hpcgen.config import DDPMConfig, TrainConfig
from hpcgen.data.stream import to_unit_range
from hpcgen.diffusion.gaussian import Diffusion, training_losses
from hpcgen.diffusion.timesteps import LossAwareSampler
from hpcgen.engine.choices import TIMESTEP_SAMPLERS
from hpcgen.engine.deepspeed_engine import make_engine
from hpcgen.engine.distributed import gather_from_ranks
from hpcgen.engine.ema import EMA, ddpm_ema_beta
from hpcgen.engine.gan_task import GANTask
from hpcgen.networks import build_networks, compile_networks, sample
from hpcgen.seeds import image_seeds, noise_generator

# DDPMTask's two ways to draw timesteps: a sampler added to TIMESTEP_SAMPLERS fails to unpack
# here until it has one
UNIFORM, LOSS_AWARE = TIMESTEP_SAMPLERS


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _module_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


class DDPMTask:
    """One DeepSpeed engine around the U-Net; the Improved-DDPM losses of diffusion/."""

    replicated = ("ema",)  # equal on every rank: rank 0's checkpoint file keeps it (TrainState)

    def __init__(self, cfg: TrainConfig, rank: int, world_size: int) -> None:
        self.cfg = mcfg = cfg.model  # type: ignore[assignment]
        assert isinstance(mcfg, DDPMConfig)
        self.run_cfg = cfg
        unet = build_networks(cfg, torch.cuda.is_available())["unet"]
        self.parameters = {"unet": count_parameters(unet)}
        self.ema = EMA(unet)  # before DeepSpeed: full fp32 weights even under ZeRO-3
        if cfg.trainer.compile:  # training's network and sampling's (the EMA)
            compile_networks(unet, self.ema.module)
        self.ema_updates = 0
        self.zero_stage = cfg.deepspeed.zero_stage
        self.engine = make_engine(
            unet,
            mcfg.lr,
            mcfg.betas,
            mcfg.weight_decay,
            cfg.deepspeed,
            cfg.trainer.batch_per_gpu,
            world_size,
        )
        self.engines = {"unet": self.engine}
        self.ema.to(self.engine.device)
        self.diffusion = Diffusion.from_schedule(mcfg.schedule, mcfg.diffusion_steps)
        self.timesteps = (
            LossAwareSampler(self.diffusion.T) if mcfg.timestep_sampler == LOSS_AWARE else None
        )
        self.generator = noise_generator(self.engine.device, cfg.seed, rank)

    def _draw(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Timesteps, importance weights (loss-aware only) and noise for a batch (B, C, H, W)."""
        if self.timesteps is None:
            t = torch.randint(
                0, self.diffusion.T, (x0.shape[0],), generator=self.generator, device=x0.device
            )
            weights = None
        else:
            t, weights = self.timesteps.sample(x0.shape[0], self.generator, x0.device)
        noise = torch.randn(x0.shape, generator=self.generator, device=x0.device, dtype=x0.dtype)
        return t, weights, noise

    def train_step(self, micro_batches: list[torch.Tensor]) -> dict[str, float]:
        totals: dict[str, float] = {}
        dtype = _module_dtype(self.engine.module)
        x0s = [to_unit_range(x.to(self.engine.device), dtype) for x in micro_batches]
        # the step's timesteps and noise are drawn at once and split, so that K accumulated
        # micro-batches train exactly as one batch K times larger would
        sizes = [len(x) for x in x0s]
        t_all, w_all, noise_all = self._draw(torch.cat(x0s))
        w_split = [None] * len(sizes) if w_all is None else w_all.split(sizes)
        for x0, t, weights, noise in zip(
            x0s, t_all.split(sizes), w_split, noise_all.split(sizes), strict=True
        ):
            terms = training_losses(
                self.diffusion,
                self.engine,
                x0,
                t,
                noise,
                self.cfg.parameterisation,
                self.cfg.variance,
                self.cfg.loss,
                self.cfg.vlb_weight,
                self.cfg.decoder_cdf,
            )
            loss = terms["loss"] if weights is None else terms["loss"] * weights
            self.engine.backward(loss.mean())
            if self.timesteps is not None:  # every rank records every rank's losses
                self.timesteps.update(
                    gather_from_ranks(t), gather_from_ranks(terms["loss"].detach().float())
                )
            self.engine.step()
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + value.mean().item() / len(micro_batches)
        beta = ddpm_ema_beta(self.cfg.ema_decay, self.ema_updates)
        self.ema.update(self.engine.module, beta, self.zero_stage)
        self.ema_updates += 1
        return totals

    def sample(self, n: int, resolution: int, seed: int) -> torch.Tensor:
        """n images in [-1, 1] from the EMA weights; image i from image_seeds(seed), any n."""
        assert resolution == self.run_cfg.data.resolution
        seeds = image_seeds(seed, n)
        return sample(self.run_cfg, self.ema.module, seeds, self.engine.device, batch=max(n, 1))

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "ema": self.ema.state_dict(),
            "ema_updates": self.ema_updates,
            "timesteps": self.timesteps.state_dict() if self.timesteps else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.ema.load_state_dict(state["ema"])
        self.ema_updates = state["ema_updates"]
        if self.timesteps is not None:
            self.timesteps.load_state_dict(state["timesteps"])


def build_task(cfg: TrainConfig, rank: int, world_size: int) -> DDPMTask | GANTask:
    return {"ddpm": DDPMTask, "gan": GANTask}[cfg.model.name](cfg, rank, world_size)
