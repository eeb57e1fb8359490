"""Typed configuration: dataclass schemas for what Hydra composes from configs/.

The dataclasses are the one source of defaults: importing this package registers them in
Hydra's ConfigStore (store.py), and the YAML under configs/ holds only what differs. Hydra
composes; `TrainConfig.from_dict` turns the composed tree into these dataclasses, rejecting
unknown keys and wrong types, and each `__post_init__` checks values. Every error is a
`ConfigError` whose message names the field, the bad value and what would work.

  checks.py   ConfigError and the common checks      data.py     data.*  (DataConfig)
  models.py   model.* (DDPMConfig, GANConfig)         runtime.py  trainer.*, deepspeed.*,
  train.py    TrainConfig, from_dict                              logger.*, eval.*
  build.py    a plain dict section -> its dataclass   store.py    the ConfigStore schemas
"""

from hpcgen.config.build import build_section
from hpcgen.config.checks import ConfigError
from hpcgen.config.data import DataConfig
from hpcgen.config.models import MODEL_SCHEMAS, DDPMConfig, GANConfig
from hpcgen.config.runtime import (
    DeepSpeedConfig,
    EvalDuringTrainingConfig,
    LoggerConfig,
    TrainerConfig,
)
from hpcgen.config.store import register
from hpcgen.config.train import NOT_THE_JOBS, TrainConfig

register()

__all__ = [
    "MODEL_SCHEMAS",
    "NOT_THE_JOBS",
    "ConfigError",
    "DDPMConfig",
    "DataConfig",
    "DeepSpeedConfig",
    "EvalDuringTrainingConfig",
    "GANConfig",
    "LoggerConfig",
    "TrainConfig",
    "TrainerConfig",
    "build_section",
]
