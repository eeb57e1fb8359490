"""The dataclasses as Hydra's structured-config schemas, so configs/ holds only deltas.

Each config group option starts from its schema (configs/model/ddpm.yaml: `defaults:
[ddpm_schema, _self_]`, Hydra 1.3's "Structured Config schema" pattern) and sets only what
differs from the dataclass; train.yaml's root is `train_schema`. OmegaConf then types every
value as it composes (a key that no dataclass has, or a value of the wrong type, fails there),
and TrainConfig.from_dict checks the result as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from hpcgen.config.data import DataConfig
from hpcgen.config.models import DDPMConfig, GANConfig
from hpcgen.config.runtime import (
    DeepSpeedConfig,
    EvalDuringTrainingConfig,
    LoggerConfig,
    TrainerConfig,
)
from hpcgen.config.train import TrainConfig


def defaults_of(cls: type) -> Any:
    """A section's defaults as OmegaConf reads them from the class, without building one:
    __post_init__ may normalise (EvalDuringTrainingConfig turns settings=null into {}, and
    Hydra can add no key to an empty mapping)."""
    return field(default_factory=lambda: OmegaConf.structured(cls))


@dataclass
class TrainSchema(TrainConfig):
    """configs/train.yaml's root: TrainConfig's fields and defaults, plus launch/train.py's own
    keys. The group-selected sections are left to their groups' schemas: `model` because
    OmegaConf cannot type a Union of two dataclasses, data and deepspeed so that registering
    builds none of them (their groups' options choose and then check them)."""

    model: Any = MISSING  # model=ddpm|gan: model/ddpm_schema or model/gan_schema
    data: Any = MISSING  # data=...: data/data_schema
    trainer: TrainerConfig = defaults_of(TrainerConfig)
    deepspeed: Any = MISSING  # deepspeed=zero1|zero2|zero3: deepspeed/deepspeed_schema
    logger: LoggerConfig = defaults_of(LoggerConfig)
    eval: EvalDuringTrainingConfig = defaults_of(EvalDuringTrainingConfig)
    # true: check every job, print what the sweep creates and costs; nothing runs
    dry_run: bool = False
    gpu_bench: str | None = None  # bench/gpu.json of launch/bench.py suite=gpu: the dry run's rates


# (group, name, schema): what configs/ names in its defaults lists
SCHEMAS: tuple[tuple[str | None, str, type], ...] = (
    (None, "train_schema", TrainSchema),
    ("model", "ddpm_schema", DDPMConfig),
    ("model", "gan_schema", GANConfig),
    ("data", "data_schema", DataConfig),
    ("deepspeed", "deepspeed_schema", DeepSpeedConfig),
)


def register() -> None:
    """Put every schema in Hydra's ConfigStore (done when hpcgen.config is imported)."""
    store = ConfigStore.instance()
    for group, name, node in SCHEMAS:
        store.store(group=group, name=name, node=node, provider="hpcgen")
