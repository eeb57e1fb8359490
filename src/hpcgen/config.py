"""Typed configuration: dataclass schemas for what Hydra composes from configs/.

Hydra composes YAML; `TrainConfig.from_dict` turns the composed tree into these dataclasses,
rejecting unknown keys and wrong types, and each `__post_init__` checks values. Every error is a
`ConfigError` whose message names the field, the bad value and what would work.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says which and what would."""


def _check_choice(path: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(
            f"{path}={value!r} is not valid: choose one of {', '.join(map(str, choices))}"
        )


def _check_positive(path: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{path}={value!r} is not valid: it must be {bound}")


@dataclass
class DataConfig:
    """Where images come from, how shards are written, and how the stream reads them."""

    name: str = "synthetic"  # synthetic | lsun_bedroom | folder
    root: str = "~/.cache/hpcgen/data/toy_bedroom_32px_2048"  # as data/synthetic.yaml resolves
    source: str | None = None  # LSUN lmdb dir, folder of images or zip (prepare reads it)
    resolution: int = 32
    num_samples: int = 2048  # synthetic only: size of the generated set
    samples_per_shard: int = 256
    filter: str = "lanczos"  # resize filter at preparation: lanczos | box | bicubic | bilinear
    format: str = "png"  # shard image encoding: png (lossless) | jpeg | webp
    quality: int = 95  # jpeg / webp quality
    shuffle_buffer: int = 256
    num_workers: int = 1  # DataLoader worker processes per rank (0: read in the main process)
    hflip: bool = True  # random horizontal flips in the stream
    max_images: int | None = None  # train on the first N images of the shards (null: all)

    def __post_init__(self) -> None:
        _check_choice("data.name", self.name, ("synthetic", "lsun_bedroom", "folder"))
        if self.max_images is not None and (
            isinstance(self.max_images, bool)
            or not isinstance(self.max_images, int)
            or self.max_images < 1
        ):
            raise ConfigError(
                f"data.max_images={self.max_images!r} is not valid: give a whole number of "
                "images >= 1 (the first N of the shards), or null for all of them"
            )
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ConfigError(
                f"data.resolution={self.resolution} is not valid: use a power of two >= 8 "
                "(e.g. 32, 64, 256)"
            )
        _check_positive("data.num_samples", self.num_samples)
        _check_positive("data.samples_per_shard", self.samples_per_shard)
        _check_choice("data.filter", self.filter, ("lanczos", "box", "bicubic", "bilinear"))
        _check_choice("data.format", self.format, ("png", "jpeg", "webp"))
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"data.quality={self.quality} is not valid: use 1..100")
        _check_positive("data.shuffle_buffer", self.shuffle_buffer, allow_zero=True)
        _check_positive("data.num_workers", self.num_workers, allow_zero=True)
        if self.name == "folder" and not self.source:
            raise ConfigError("data=folder needs data.source=<folder or zip of images>")


@dataclass
class DDPMConfig:
    """DDPM (Ho et al. 2020) with Improved DDPM's schedules, parameterisations and losses."""

    name: str = "ddpm"
    preset: str = "small"  # a U-Net of models/unet.py PRESETS (tiny, small, lsun64, ...)
    diffusion_steps: int = 1000
    schedule: str = "linear"  # linear | cosine
    parameterisation: str = "eps"  # eps | x0 | mu: what the network predicts
    variance: str = "fixed_small"  # fixed_small (beta_tilde) | fixed_large (beta) | learned_range
    loss: str = "simple"  # simple | hybrid (simple + vlb_weight * L_vlb) | vlb
    vlb_weight: float = 0.001
    sampler: str = "ddpm100"  # ddpm, ddpmN (respaced) or ddimN for the sample grids
    ddim_eta: float = 0.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    num_samples: int = 16  # images in each sample grid
    ema_decay: float = 0.9999  # EMA of the weights (warm-up (1 + n) / (10 + n)), for samples
    timestep_sampler: str = "uniform"  # uniform | loss_aware (Improved DDPM's, for L_vlb)
    decoder_cdf: str = "tanh"  # L_0's normal CDF: tanh (improved-diffusion's, published) | exact
    # recompute each U-Net block's activations in the backward pass instead of keeping them:
    # less memory for large presets (lsun256), more time per step
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        from hpcgen.diffusion.gaussian import DECODER_CDFS, parse_sampler
        from hpcgen.models.unet import PRESETS

        _check_choice("model.name", self.name, ("ddpm",))
        _check_choice("model.decoder_cdf", self.decoder_cdf, tuple(DECODER_CDFS))
        _check_choice("model.timestep_sampler", self.timestep_sampler, ("uniform", "loss_aware"))
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay={self.ema_decay} is not valid: use 0..1 (0.9999)")
        _check_choice("model.preset", self.preset, tuple(PRESETS))
        _check_positive("model.diffusion_steps", self.diffusion_steps)
        _check_choice("model.schedule", self.schedule, ("linear", "cosine"))
        if self.schedule == "linear" and 1000 / self.diffusion_steps * 0.02 >= 1:
            # Ho et al.'s 1e-4..0.02 at T=1000, scaled by 1000/T (Improved DDPM's rule)
            raise ConfigError(
                f"model.schedule=linear with model.diffusion_steps={self.diffusion_steps} has "
                f"betas up to {1000 / self.diffusion_steps * 0.02:.2f} (0.02 x 1000/T), and a beta "
                ">= 1 makes every loss NaN: use model.diffusion_steps >= 21, or "
                "model.schedule=cosine"
            )
        _check_choice("model.parameterisation", self.parameterisation, ("eps", "x0", "mu"))
        _check_choice(
            "model.variance", self.variance, ("fixed_small", "fixed_large", "learned_range")
        )
        _check_choice("model.loss", self.loss, ("simple", "hybrid", "vlb"))
        if self.variance == "learned_range" and self.loss == "simple":
            raise ConfigError(
                "model.variance=learned_range needs model.loss=hybrid or vlb: "
                "L_simple does not train the variance"
            )
        _check_positive("model.vlb_weight", self.vlb_weight, allow_zero=True)
        try:
            _, steps = parse_sampler(self.sampler)
        except ValueError as err:
            raise ConfigError(f"model.sampler={self.sampler!r} is not valid: {err}") from err
        if steps is not None and not 1 <= steps <= self.diffusion_steps:
            raise ConfigError(
                f"model.sampler={self.sampler} asks for {steps} steps: use 1.."
                f"{self.diffusion_steps} (model.diffusion_steps)"
            )
        if not 0.0 <= self.ddim_eta <= 1.0:
            raise ConfigError(f"model.ddim_eta={self.ddim_eta} is not valid: use 0..1")
        _check_positive("model.lr", self.lr)
        _check_positive("model.num_samples", self.num_samples)


def _all_augmentations() -> list[str]:
    """ADA's full "bgc" pipeline in its order, as gan/augment.py defines it."""
    from hpcgen.gan.augment import AUGMENTATIONS

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
        from hpcgen.gan.augment import AUGMENTATIONS
        from hpcgen.gan.losses import LOSSES
        from hpcgen.models.stylegan import PRESETS

        _check_choice("model.name", self.name, ("gan",))
        _check_choice("model.preset", self.preset, tuple(PRESETS))
        _check_choice("model.loss", self.loss, LOSSES)
        for name in ("lr_g", "lr_d", "num_samples", "r1_interval", "pl_interval", "ada_kimg"):
            _check_positive(f"model.{name}", getattr(self, name))
        for name in (
            "r1_gamma",
            "gp_lambda",
            "pl_weight",
            "num_fp16_res",
            "ema_kimg",
            "ema_rampup",
            "unrolled_steps",
        ):
            _check_positive(f"model.{name}", getattr(self, name), allow_zero=True)
        _check_positive("model.ada_interval", self.ada_interval)
        _check_positive("model.mbstd_group", self.mbstd_group)
        if self.conv_clamp is not None:
            _check_positive("model.conv_clamp", self.conv_clamp)
        if self.unrolled_lr is not None:
            _check_positive("model.unrolled_lr", self.unrolled_lr)
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
        _check_choice(
            "model.reduced_precision", self.reduced_precision, ("auto", "none", "bf16", "fp16")
        )
        if self.truncation_psi < 0:
            raise ConfigError(f"model.truncation_psi={self.truncation_psi} must be >= 0")


@dataclass
class TrainerConfig:
    """The loop's schedule, in steps (one step = one optimizer update of every network)."""

    max_steps: int = 300
    batch_per_gpu: int = 16
    global_batch: int | None = None  # when set, batch_per_gpu is derived from it
    log_every_steps: int = 25
    ckpt_every_steps: int = 100
    sample_every_steps: int = 100
    keep_last_ckpts: int = 3
    ckpt_milestone_every_steps: int = 0  # also keep every M-th step for evaluation (0: none)
    preempt_check_every_steps: int = 1  # how often ranks agree on a scheduler signal
    allow_fresh_start_on_corrupt: bool = False  # no valid checkpoint: error, or start over
    lease_heartbeat_s: float = 30.0  # run-dir lease renewal; a holder elsewhere is dead after 4
    # a rank silent this long (SIGSTOP, a wedged host, a cut link) ends the job, named, instead
    # of holding every node in torch's 30-minute collective timeout
    peer_timeout_s: float = 300.0
    # torch.compile the networks (inductor) for training and sampling; the first steps compile
    # (minutes for a large U-Net), then run faster. Penalties that differentiate twice (R1,
    # WGAN-GP, path length) run their forward uncompiled
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_per_gpu", "log_every_steps", "ckpt_every_steps"):
            _check_positive(f"trainer.{name}", getattr(self, name))
        _check_positive("trainer.sample_every_steps", self.sample_every_steps)
        _check_positive("trainer.keep_last_ckpts", self.keep_last_ckpts)
        _check_positive(
            "trainer.ckpt_milestone_every_steps", self.ckpt_milestone_every_steps, allow_zero=True
        )
        _check_positive("trainer.preempt_check_every_steps", self.preempt_check_every_steps)
        _check_positive("trainer.lease_heartbeat_s", self.lease_heartbeat_s)
        _check_positive("trainer.peer_timeout_s", self.peer_timeout_s)
        if self.global_batch is not None:
            _check_positive("trainer.global_batch", self.global_batch)

    def resolve_batch(self, world_size: int, grad_accum_steps: int) -> int:
        """batch_per_gpu x grad_accum_steps x world_size = global batch; sets batch_per_gpu."""
        if self.global_batch is not None:
            per_step = world_size * grad_accum_steps
            if self.global_batch % per_step:
                raise ConfigError(
                    f"trainer.global_batch={self.global_batch} does not divide over {world_size} "
                    f"rank(s) x {grad_accum_steps} accumulation step(s): use a multiple of "
                    f"{per_step}, or set trainer.batch_per_gpu instead"
                )
            self.batch_per_gpu = self.global_batch // per_step
        return self.batch_per_gpu


@dataclass
class DeepSpeedConfig:
    """The parts of a DeepSpeed config that hpcgen exposes; engine/ builds the JSON."""

    zero_stage: int = 2
    precision: str = "fp32"  # fp32 | bf16 | fp16
    grad_accum_steps: int = 1
    grad_clip: float = 0.0  # 0 disables clipping
    optimizer: str = "adamw"  # adamw | adam (torch's; the models' betas and weight decay)
    warmup_steps: int = 0  # linear learning-rate warm-up over this many optimizer steps
    lr_schedule: str = "constant"  # constant | cosine (after the warm-up)
    min_lr_ratio: float = 0.0  # cosine: the learning rate at the end, as a fraction of the peak
    decay_steps: int | None = None  # cosine: reaches min_lr_ratio here (default trainer.max_steps)
    # one rank shards nothing: a fresh run there takes DeepSpeed's stage 0 (no flat partitions,
    # no gradient all-reduce) whatever zero_stage says; a resume keeps its checkpoint's stage
    unsharded_at_one_rank: bool = True

    def __post_init__(self) -> None:
        _check_choice("deepspeed.zero_stage", self.zero_stage, (0, 1, 2, 3))
        _check_choice("deepspeed.optimizer", self.optimizer, ("adamw", "adam"))
        _check_positive("deepspeed.warmup_steps", self.warmup_steps, allow_zero=True)
        _check_choice("deepspeed.lr_schedule", self.lr_schedule, ("constant", "cosine"))
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(
                f"deepspeed.min_lr_ratio={self.min_lr_ratio} must be in [0, 1] "
                "(the final learning rate as a fraction of the peak, e.g. 0.1)"
            )
        if self.decay_steps is not None and self.decay_steps <= self.warmup_steps:
            raise ConfigError(
                f"deepspeed.decay_steps={self.decay_steps} must exceed deepspeed.warmup_steps="
                f"{self.warmup_steps}: the cosine decay starts after the warm-up"
            )
        _check_choice("deepspeed.precision", self.precision, ("fp32", "bf16", "fp16"))
        _check_positive("deepspeed.grad_accum_steps", self.grad_accum_steps)
        _check_positive("deepspeed.grad_clip", self.grad_clip, allow_zero=True)


@dataclass
class LoggerConfig:
    """Where rank 0 reports besides metrics.jsonl and the console."""

    tensorboard: bool = False  # scalars and sample grids under <run>/tensorboard


@dataclass
class EvalDuringTrainingConfig:
    """Evaluation while the run trains (engine/eval_queue.py): each milestone checkpoint, and
    the run's last one, is evaluated as its own job when it commits; training never waits."""

    during_training: bool = False
    partition: str | None = None  # SLURM: where the evaluation jobs run (null: the default)
    gpus: int = 0  # SLURM: GPUs per evaluation job
    cpus_per_task: int = 4
    mem_gb: int | None = None
    time_min: int = 240
    sbatch_args: list[str] = field(default_factory=list)  # e.g. [--account=x, --qos=y]
    settings: dict[str, Any] | None = None  # eval.* of configs/evaluate.yaml (null: its own)

    def __post_init__(self) -> None:
        _check_positive("eval.gpus", self.gpus, allow_zero=True)
        _check_positive("eval.cpus_per_task", self.cpus_per_task)
        _check_positive("eval.time_min", self.time_min)
        if self.mem_gb is not None:
            _check_positive("eval.mem_gb", self.mem_gb)
        self.settings = {} if self.settings is None else self.settings
        if not isinstance(self.settings, dict):
            raise ConfigError(
                f"eval.settings={self.settings!r} must be a mapping of configs/evaluate.yaml's "
                "eval fields, e.g. 'eval.settings={num_samples:10000,extractor:inception}'"
            )


MODEL_SCHEMAS: dict[str, type] = {"ddpm": DDPMConfig, "gan": GANConfig}
# top-level keys of a composed train config that are not the job's: Hydra's, and train.yaml's
# for launch/train.py itself (dry_run, gpu_bench: cli/dry_run.py)
NOT_THE_JOBS = ("hydra", "dry_run", "gpu_bench")


@dataclass
class TrainConfig:
    """Everything one training job needs; built from Hydra's composed config."""

    model: DDPMConfig | GANConfig
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalDuringTrainingConfig = field(default_factory=EvalDuringTrainingConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        self._check_eval_during_training()
        ds = self.deepspeed
        if ds.decay_steps is None:
            ds.decay_steps = max(self.trainer.max_steps, ds.warmup_steps + 1)
        m = self.model
        if isinstance(m, GANConfig) and m.pl_weight > 0 and self.deepspeed.zero_stage == 3:
            raise ConfigError(
                "model.pl_weight>0 with deepspeed=zero3: path-length regularisation "
                "differentiates G's image with respect to w, which ZeRO-3's wrapped module "
                "outputs do not allow; use deepspeed=zero2 (or zero1), or model.pl_weight=0"
            )
        if isinstance(m, GANConfig) and m.unrolled_steps > 0 and self.deepspeed.zero_stage == 3:
            raise ConfigError(
                f"model.unrolled_steps={m.unrolled_steps} with deepspeed=zero3: the look-ahead "
                "runs D on a functional copy of its full weights, which ZeRO-3 partitions over "
                "the ranks; use deepspeed=zero2 (or zero1), or model.unrolled_steps=0"
            )
        if isinstance(m, GANConfig) and m.unrolled_steps > 0 and self.trainer.compile:
            raise ConfigError(
                f"trainer.compile=true with model.unrolled_steps={m.unrolled_steps}: the "
                "look-ahead differentiates through D's own update (a second backward), which "
                "compiled graphs do not support; use trainer.compile=false, or unrolled_steps=0"
            )

    def _check_eval_during_training(self) -> None:
        """Milestones are what it evaluates: they must exist and fall on saved steps."""
        every, saved = self.trainer.ckpt_milestone_every_steps, self.trainer.ckpt_every_steps
        if not self.eval.during_training:
            return
        if every == 0:
            raise ConfigError(
                "eval.during_training=true evaluates milestone checkpoints, but "
                "trainer.ckpt_milestone_every_steps=0 makes none: set it, e.g. "
                f"trainer.ckpt_milestone_every_steps={10 * saved}"
            )
        if every % saved:
            raise ConfigError(
                f"eval.during_training=true evaluates the milestones of trainer."
                f"ckpt_milestone_every_steps={every}, but checkpoints are saved every "
                f"trainer.ckpt_every_steps={saved}: use a multiple of {saved}"
            )

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> TrainConfig:
        """Build from a plain (resolved) dict, e.g. OmegaConf.to_container(cfg, resolve=True)."""
        tree = {k: v for k, v in tree.items() if k not in NOT_THE_JOBS}
        model = tree.get("model")
        if not isinstance(model, dict) or model.get("name") not in MODEL_SCHEMAS:
            name = model.get("name") if isinstance(model, dict) else model
            raise ConfigError(
                f"model={name!r} is not a known model: choose one of {', '.join(MODEL_SCHEMAS)}"
            )
        fields = {
            "model": build_section(MODEL_SCHEMAS[model["name"]], model, "model"),
            "data": build_section(DataConfig, tree.get("data", {}), "data"),
            "trainer": build_section(TrainerConfig, tree.get("trainer", {}), "trainer"),
            "deepspeed": build_section(DeepSpeedConfig, tree.get("deepspeed", {}), "deepspeed"),
            "logger": build_section(LoggerConfig, tree.get("logger", {}), "logger"),
            "eval": build_section(EvalDuringTrainingConfig, tree.get("eval", {}), "eval"),
        }
        extra = set(tree) - set(fields) - {"seed"}
        if extra:
            raise ConfigError(
                f"unknown top-level config key(s) {', '.join(sorted(extra))}: known keys are "
                "model, data, trainer, deepspeed, logger, eval, seed"
            )
        return cls(**fields, seed=_coerce(int, tree.get("seed", 0), "seed"))


def build_section(cls: type, values: Any, path: str) -> Any:
    """Build dataclass `cls` from a mapping, naming `path.key` in every error."""
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must be a mapping of fields, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {path}.{unknown[0]}: {path} takes {', '.join(sorted(known))}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{path}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    """Check a YAML value against a type hint; accept ints for floats and lists for tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}={value!r} has the wrong type: expected {hint}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{path}={value!r} must be a list of {len(args)} values")
        return tuple(
            _coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={value!r} must be a list")
        (arg,) = typing.get_args(hint)
        return [_coerce(arg, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (
        isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{path}={value!r} has the wrong type: expected {hint.__name__}")
    return value
