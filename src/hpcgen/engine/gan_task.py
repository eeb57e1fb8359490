"""One StyleGAN2-ADA training step on two DeepSpeed engines (G, D): D phase with lazy R1 (or
WGAN-GP), then G phase with D frozen, style mixing and optional lazy path-length
regularisation; ADA's p follows D's overfitting statistic, averaged over ranks."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from hpcgen.config import GANConfig, TrainConfig
from hpcgen.data.stream import to_unit_range
from hpcgen.engine.deepspeed_engine import make_engine
from hpcgen.engine.distributed import average_over_ranks_, mean_over_ranks
from hpcgen.engine.ema import EMA, gan_ema_beta
from hpcgen.engine.terminal import print_layer_table
from hpcgen.gan.augment import AdaController, AugmentPipe
from hpcgen.gan.losses import d_loss, g_loss, gradient_penalty, path_length_penalty, r1_penalty
from hpcgen.gan.unrolled import unrolled_logits
from hpcgen.models import stylegan
from hpcgen.models.summary import layer_summary
from hpcgen.networks import build_networks, compile_networks, eager, sample
from hpcgen.seeds import image_seeds, noise_generator

REPORTED_LAYERS = (
    stylegan.MappingNetwork,
    stylegan.SynthesisLayer,
    stylegan.ToRGB,
    stylegan.SynthesisBlock,
    stylegan.DiscriminatorBlock,
    stylegan.DiscriminatorEpilogue,
    stylegan.MinibatchStd,
    stylegan.Conv2dLayer,
    stylegan.FullyConnected,
)


def layer_tables(generator: stylegan.Generator, discriminator: stylegan.Discriminator) -> dict:
    """Per-layer rows of G and D (the report's Figures 5 and 6) from one batch of 2, without
    touching the global RNG or w_avg."""
    z = torch.randn(2, generator.z_dim, generator=torch.Generator().manual_seed(0))
    modes = generator.training, discriminator.training
    generator.eval(), discriminator.eval()
    try:
        # affine layers count inside the layer they modulate, as in the report
        rows_g = layer_summary(generator, (z,), REPORTED_LAYERS, (".affine",), noise_mode="const")
        img = generator(z, noise_mode="const")
        rows_d = layer_summary(discriminator, (img,), REPORTED_LAYERS)
    finally:
        generator.train(modes[0]), discriminator.train(modes[1])
    return {"generator": rows_g, "discriminator": rows_d}


class GANTask:
    """The GAN's restartable training state: two engines, ADA's controller, counters."""

    replicated = ("ema",)  # equal on every rank: rank 0's checkpoint file keeps it (TrainState)

    def __init__(self, cfg: TrainConfig, rank: int, world_size: int) -> None:
        self.cfg = mcfg = cfg.model  # type: ignore[assignment]
        assert isinstance(mcfg, GANConfig)
        self.run_cfg = cfg
        nets = build_networks(cfg, torch.cuda.is_available())
        generator, discriminator = nets["generator"], nets["discriminator"]
        self.z_dim = generator.z_dim
        self.parameters = {
            "generator": sum(p.numel() for p in generator.parameters()),
            "discriminator": sum(p.numel() for p in discriminator.parameters()),
        }
        self.ema = EMA(generator)  # before DeepSpeed: full fp32 weights even under ZeRO-3
        self.zero_stage = cfg.deepspeed.zero_stage
        if rank == 0:
            for name, rows in layer_tables(generator, discriminator).items():
                print_layer_table(f"{name} ({mcfg.preset}, {cfg.data.resolution}px)", rows)
        common = dict(
            cfg=cfg.deepspeed,
            batch_per_gpu=cfg.trainer.batch_per_gpu,
            world_size=world_size,
            weight_decay=mcfg.weight_decay,
        )
        # StyleGAN2, appendix B: lazy regularisation rescales Adam's lr and betas by N / (N + 1)
        c_d = mcfg.r1_interval / (mcfg.r1_interval + 1) if mcfg.r1_gamma > 0 else 1.0
        c_g = mcfg.pl_interval / (mcfg.pl_interval + 1) if mcfg.pl_weight > 0 else 1.0
        betas_g = (mcfg.betas[0] ** c_g, mcfg.betas[1] ** c_g)
        betas_d = (mcfg.betas[0] ** c_d, mcfg.betas[1] ** c_d)
        if cfg.trainer.compile:  # G, D and sampling's G (the EMA); R1 and PL run eager(...)
            compile_networks(generator, discriminator, self.ema.module)
        self.g = make_engine(generator, lr=mcfg.lr_g * c_g, betas=betas_g, **common)
        self.d = make_engine(discriminator, lr=mcfg.lr_d * c_d, betas=betas_d, **common)
        self.engines = {"generator": self.g, "discriminator": self.d}
        self.device = self.g.device
        self.ema.to(self.device)
        self.generator = noise_generator(self.device, cfg.seed, rank)
        self.augment = AugmentPipe(tuple(mcfg.augment))
        self.ada = AdaController(mcfg.ada_target or 0.6, mcfg.ada_kimg, mcfg.ada_interval)
        self.ada.p = mcfg.augment_p
        self.global_batch = cfg.trainer.batch_per_gpu * cfg.deepspeed.grad_accum_steps * world_size
        self.steps = 0
        self.images_seen = 0
        self.pl_mean = torch.zeros([], device=self.device)

    def _latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=self.generator, device=self.device)

    def _aug(self, images: torch.Tensor) -> torch.Tensor:
        return self.augment(images, self.ada.p, self.generator)

    def train_step(self, micro_batches: list[torch.Tensor]) -> dict[str, float]:
        m = self.cfg
        do_r1 = m.r1_gamma > 0 and self.steps % m.r1_interval == 0
        do_pl = m.pl_weight > 0 and self.steps % m.pl_interval == 0
        n_micro = len(micro_batches)
        out: dict[str, float] = {}

        def add(key: str, value: torch.Tensor) -> None:
            out[key] = out.get(key, 0.0) + float(value.detach().float().mean()) / n_micro

        self._d_phase(micro_batches, do_r1, add)
        if m.ada_target is not None:
            self.ada.step(self.global_batch, mean_over_ranks)
        out["ada_p"] = self.ada.p
        self._g_phase(micro_batches, do_pl, add)
        # w_avg follows each rank's own batches; averaged, every rank holds what rank 0's
        # checkpoint restores, so a resumed run matches an uninterrupted one on every rank
        with torch.no_grad():
            average_over_ranks_(self.g.module.mapping.w_avg)
        self.steps += 1
        self.images_seen += self.global_batch
        beta = gan_ema_beta(self.global_batch, self.images_seen, m.ema_kimg, m.ema_rampup)
        self.ema.update(self.g.module, beta, self.zero_stage)
        return out

    def _d_phase(self, micro_batches: list[torch.Tensor], do_r1: bool, add) -> None:
        """D's step: fakes without graph; reals and fakes through D separately (minibatch std
        must not mix them). Penalties that differentiate D's input (R1, WGAN-GP) run their own
        forward through the bare module: DeepSpeed's hooks on the engine's outputs would take
        torch.autograd.grad for the backward pass and reduce gradients early."""
        m = self.cfg
        for real in micro_batches:
            real = to_unit_range(real.to(self.device), torch.float32)
            with torch.no_grad():
                fake = self.g.module(self._latents(real.shape[0]), mixing_prob=m.style_mixing_prob)
            fake_aug, real_aug = self._aug(fake), self._aug(real)
            fake_logits, real_logits = self.d(fake_aug), self.d(real_aug)  # (B,), (B,)
            self.ada.accumulate(real_logits)
            loss = d_loss(m.loss, real_logits, fake_logits)
            add("loss_d", loss)
            if m.loss == "wgan_gp":
                gp = gradient_penalty(eager(self.d.module), real_aug, fake_aug, self.generator)
                loss = loss + m.gp_lambda * gp
                add("gp", gp)
            if do_r1:  # Mescheder et al.: on the reals before augmentation, through it
                real_r1 = real.detach().requires_grad_(True)
                r1 = r1_penalty(eager(self.d.module)(self._aug(real_r1)), real_r1)
                loss = loss + r1 * (m.r1_gamma / 2) * m.r1_interval
                add("r1", r1)
            self.d.backward(loss)
            self.d.step()
            add("d_real", real_logits)
            add("d_fake", fake_logits)

    def _g_phase(self, micro_batches: list[torch.Tensor], do_pl: bool, add) -> None:
        """G's step: D frozen and called outside its engine, so no gradient reaches D; with
        unrolled_steps = K, G's loss is taken on D after K look-ahead steps (Metz et al.)."""
        m = self.cfg
        self.d.module.requires_grad_(False)
        try:
            for real in micro_batches:
                n = real.shape[0]
                fake = self.g(self._latents(n), mixing_prob=m.style_mixing_prob)
                loss = g_loss(m.loss, self._d_logits_for_g(real, self._aug(fake)))
                add("loss_g", loss)
                if do_pl:  # on half the batch, as StyleGAN2 does, with its own forward
                    g_eager = eager(self.g.module)
                    img, ws = g_eager(self._latents(max(n // 2, 1)), return_ws=True)
                    pl, self.pl_mean = path_length_penalty(
                        img, ws, self.pl_mean, m.pl_decay, self.generator
                    )
                    loss = loss + pl * m.pl_weight * m.pl_interval
                    add("pl", pl)
                self.g.backward(loss)
                self.g.step()
        finally:
            self.d.module.requires_grad_(True)

    def _d_logits_for_g(self, real: torch.Tensor, fake_aug: torch.Tensor) -> torch.Tensor:
        """D's logits on G's augmented fakes: D as it is, or after unrolled_steps look-ahead."""
        m = self.cfg
        if not m.unrolled_steps:
            return self.d.module(fake_aug)
        real_aug = self._aug(to_unit_range(real.to(self.device), torch.float32))
        d_loss_of_logits = partial(d_loss, m.loss)
        lr = m.unrolled_lr or m.lr_d
        return unrolled_logits(
            self.d.module, d_loss_of_logits, real_aug, fake_aug, m.unrolled_steps, lr
        )

    @torch.no_grad()
    def sample(self, n: int, resolution: int, seed: int) -> torch.Tensor:
        """n images in [-1, 1] from G's EMA; image i from image_seeds(seed) whatever n is."""
        assert resolution == self.run_cfg.data.resolution
        seeds = image_seeds(seed, n)
        batch = max(n, 1)  # one batch: a grid, not per-seed exact images
        return sample(self.run_cfg, self.ema.module, seeds, self.device, None, None, batch, False)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "ada": self.ada.state_dict(),
            "steps": self.steps,
            "images_seen": self.images_seen,
            "pl_mean": self.pl_mean.cpu(),
            "ema": self.ema.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.ada.load_state_dict(state["ada"])
        self.steps, self.images_seen = state["steps"], state["images_seen"]
        self.ema.load_state_dict(state["ema"])
        self.pl_mean = state["pl_mean"].to(self.device)
