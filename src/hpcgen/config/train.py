"""TrainConfig: everything one training job needs, built from Hydra's composed tree."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpcgen.config.build import build_section, coerce
from hpcgen.config.checks import ConfigError
from hpcgen.config.data import DataConfig
from hpcgen.config.models import MODEL_SCHEMAS, DDPMConfig, GANConfig
from hpcgen.config.runtime import (
    DeepSpeedConfig,
    EvalDuringTrainingConfig,
    LoggerConfig,
    TrainerConfig,
)

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
        if isinstance(self.model, GANConfig):
            self._check_gan()

    def _check_gan(self) -> None:
        """What the GAN's penalties and look-ahead need from DeepSpeed and the compiler."""
        m, zero3 = self.model, self.deepspeed.zero_stage == 3
        if m.pl_weight > 0 and zero3:
            raise ConfigError(
                "model.pl_weight>0 with deepspeed=zero3: path-length regularisation "
                "differentiates G's image with respect to w, which ZeRO-3's wrapped module "
                "outputs do not allow; use deepspeed=zero2 (or zero1), or model.pl_weight=0"
            )
        if m.unrolled_steps > 0 and zero3:
            raise ConfigError(
                f"model.unrolled_steps={m.unrolled_steps} with deepspeed=zero3: the look-ahead "
                "runs D on a functional copy of its full weights, which ZeRO-3 partitions over "
                "the ranks; use deepspeed=zero2 (or zero1), or model.unrolled_steps=0"
            )
        if m.unrolled_steps > 0 and self.trainer.compile:
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
        return cls(**fields, seed=coerce(int, tree.get("seed", 0), "seed"))
