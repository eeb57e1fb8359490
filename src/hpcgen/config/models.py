"""model.*: the DDPM and the GAN, one schema each (configs/model/ddpm.yaml, gan.yaml).

The choices of a field come from the module that implements them: torch-free leaves imported
here (gan/choices.py: augmentations, reduced precision; engine/choices.py: timestep samplers),
and the maths (diffusion/gaussian.py, gan/losses.py, models/*.py PRESETS), which imports torch,
only when a config is checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hpcgen.config.checks import ConfigError, check_choice, check_positive
from hpcgen.engine.choices import TIMESTEP_SAMPLERS
from hpcgen.gan.choices import AUGMENTATIONS, REDUCED_PRECISIONS


@dataclass
class DDPMConfig:
    """DDPM (Ho et al. 2020) with Improved DDPM's schedules, parameterisations and losses."""

    name: str = "ddpm"
    preset: str = "small"  # a U-Net of models/unet.py PRESETS (tiny, small, lsun64, ...)
    diffusion_steps: int = 1000
    schedule: str = "linear"  # linear | cosine (Improved DDPM eq. 17)
    parameterisation: str = "eps"  # eps | x0 | mu: what the network predicts
    variance: str = "fixed_small"  # fixed_small (beta_tilde) | fixed_large (beta) | learned_range
    loss: str = "simple"  # simple | hybrid (simple + vlb_weight * L_vlb) | vlb
    vlb_weight: float = 0.001
    sampler: str = "ddpm100"  # ddpm, ddpmN (respaced) or ddimN for the sample grids
    ddim_eta: float = 0.0
    # the predicted x0 in sampling (diffusion/gaussian.py CLIP_X0): recompute (clip it, derive
    # DDIM's eps from it: improved-diffusion's) | clip (clip it, keep the network's eps:
    # diffusers') | none
    clip_x0: str = "recompute"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    num_samples: int = 16  # images in each sample grid
    # EMA of the weights (warm-up (1 + n) / (10 + n)): samples and evaluation
    ema_decay: float = 0.9999
    timestep_sampler: str = "uniform"  # uniform | loss_aware (Improved DDPM's, for L_vlb)
    decoder_cdf: str = "tanh"  # L_0's normal CDF: tanh (improved-diffusion's, published) | exact
    # recompute each U-Net block's activations in the backward pass instead of keeping them:
    # less memory for large presets (lsun256), more time per step
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        from hpcgen.diffusion.gaussian import (
            CLIP_X0,
            DECODER_CDFS,
            PARAMETERISATIONS,
            SCHEDULES,
            VARIANCES,
            parse_sampler,
        )
        from hpcgen.diffusion.gaussian import LOSSES as DDPM_LOSSES
        from hpcgen.models.unet import PRESETS

        check_choice("model.name", self.name, ("ddpm",))
        check_choice("model.decoder_cdf", self.decoder_cdf, DECODER_CDFS)
        check_choice("model.clip_x0", self.clip_x0, CLIP_X0)
        check_choice("model.timestep_sampler", self.timestep_sampler, TIMESTEP_SAMPLERS)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay={self.ema_decay} is not valid: use 0..1 (0.9999)")
        check_choice("model.preset", self.preset, PRESETS)
        check_positive("model.diffusion_steps", self.diffusion_steps)
        check_choice("model.schedule", self.schedule, SCHEDULES)
        if self.schedule == "linear" and 1000 / self.diffusion_steps * 0.02 >= 1:
            # Ho et al.'s 1e-4..0.02 at T=1000, scaled by 1000/T (Improved DDPM's rule)
            raise ConfigError(
                f"model.schedule=linear with model.diffusion_steps={self.diffusion_steps} has "
                f"betas up to {1000 / self.diffusion_steps * 0.02:.2f} (0.02 x 1000/T), and a beta "
                ">= 1 makes every loss NaN: use model.diffusion_steps >= 21, or "
                "model.schedule=cosine"
            )
        check_choice("model.parameterisation", self.parameterisation, PARAMETERISATIONS)
        check_choice("model.variance", self.variance, VARIANCES)
        check_choice("model.loss", self.loss, DDPM_LOSSES)
        if self.variance == "learned_range" and self.loss == "simple":
            raise ConfigError(
                "model.variance=learned_range needs model.loss=hybrid or vlb: "
                "L_simple does not train the variance"
            )
        check_positive("model.vlb_weight", self.vlb_weight, allow_zero=True)
        self._check_sampler(parse_sampler)
        if not 0.0 <= self.ddim_eta <= 1.0:
            raise ConfigError(f"model.ddim_eta={self.ddim_eta} is not valid: use 0..1")
        check_positive("model.lr", self.lr)
        check_positive("model.num_samples", self.num_samples)

    def _check_sampler(self, parse_sampler) -> None:
        try:
            _, steps = parse_sampler(self.sampler)
        except ValueError as err:
            raise ConfigError(f"model.sampler={self.sampler!r} is not valid: {err}") from err
        if steps is not None and not 1 <= steps <= self.diffusion_steps:
            raise ConfigError(
                f"model.sampler={self.sampler} asks for {steps} steps: use 1.."
                f"{self.diffusion_steps} (model.diffusion_steps)"
            )


def _all_augmentations() -> list[str]:
    """ADA's full "bgc" pipeline in its order, as gan/augment.py applies it."""
    return list(AUGMENTATIONS)


@dataclass
class GANConfig:
    """StyleGAN2-ADA (Karras et al. 2020): networks, loss, R1/WGAN-GP/path length, ADA."""

    name: str = "gan"
    preset: str = "small"  # a network of models/stylegan.py PRESETS (stylegan2: the report's)
    loss: str = "nonsaturating"  # nonsaturating | minimax | wgan_gp
    lr_g: float = 0.0025
    lr_d: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    weight_decay: float = 0.0
    num_samples: int = 16
    r1_gamma: float = 0.0128  # StyleGAN2-ADA's heuristic 0.0002 R^2 / batch at 64px, batch 64
    r1_interval: int = 16  # lazy regularisation: every N-th D step, weighted by N
    gp_lambda: float = 10.0  # WGAN-GP's penalty weight (model.loss=wgan_gp only)
    pl_weight: float = 0.0  # path-length regularisation of G (0: off)
    pl_interval: int = 4
    pl_decay: float = 0.01
    style_mixing_prob: float = 0.9
    truncation_psi: float = 1.0  # for sample grids; 1 = no truncation
    # ADA's augmentations, all of gan/augment.py's (its "bgc" pipeline) unless listed
    augment: list[str] = field(default_factory=_all_augmentations)
    augment_p: float = 0.0  # initial strength (the fixed one when ada_target is null)
    ada_target: float | None = 0.6  # r_t target; null: p stays at augment_p
    ada_kimg: float = 500.0  # p can move from 0 to 1 in this many thousand images
    ada_interval: int = 4  # steps between adjustments
    reduced_precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | none | bf16 | fp16
    num_fp16_res: int = 4  # how many top resolutions run in reduced precision
    conv_clamp: float | None = 256.0  # every conv layer's activations in +-this (null: none)
    mbstd_group: int = 4
    ema_kimg: float = 10.0  # half-life of G's EMA in thousands of images (StyleGAN2-ADA)
    ema_rampup: float = 0.05  # half-life at most this fraction of the images seen (0: none)
    unrolled_steps: int = 0  # Metz et al. 2017: G's loss through K look-ahead D steps (0: off)
    unrolled_lr: float | None = None  # step size of the look-ahead (null: lr_d)

    def __post_init__(self) -> None:
        from hpcgen.gan.losses import LOSSES
        from hpcgen.models.stylegan import PRESETS

        check_choice("model.name", self.name, ("gan",))
        check_choice("model.preset", self.preset, PRESETS)
        check_choice("model.loss", self.loss, LOSSES)
        for name in ("lr_g", "lr_d", "num_samples", "r1_interval", "pl_interval", "ada_kimg"):
            check_positive(f"model.{name}", getattr(self, name))
        for name in ("r1_gamma", "gp_lambda", "pl_weight", "num_fp16_res", "ema_kimg"):
            check_positive(f"model.{name}", getattr(self, name), allow_zero=True)
        for name in ("ema_rampup", "unrolled_steps"):
            check_positive(f"model.{name}", getattr(self, name), allow_zero=True)
        check_positive("model.ada_interval", self.ada_interval)
        check_positive("model.mbstd_group", self.mbstd_group)
        if self.conv_clamp is not None:
            check_positive("model.conv_clamp", self.conv_clamp)
        if self.unrolled_lr is not None:
            check_positive("model.unrolled_lr", self.unrolled_lr)
        for name in ("style_mixing_prob", "augment_p", "pl_decay"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"model.{name}={getattr(self, name)} is not valid: use 0..1")
        if self.ada_target is not None and not 0.0 < self.ada_target < 1.0:
            raise ConfigError(
                f"model.ada_target={self.ada_target} is not valid: use a value in (0, 1) "
                "(0.6 in the ADA paper) or null for a fixed model.augment_p"
            )
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        if unknown:
            raise ConfigError(
                f"model.augment has unknown augmentation(s) {unknown}: choose from "
                f"{', '.join(AUGMENTATIONS)}"
            )
        check_choice("model.reduced_precision", self.reduced_precision, REDUCED_PRECISIONS)
        if self.truncation_psi < 0:
            raise ConfigError(f"model.truncation_psi={self.truncation_psi} must be >= 0")


MODEL_SCHEMAS: dict[str, type] = {"ddpm": DDPMConfig, "gan": GANConfig}
