#!/usr/bin/env python
"""Evaluate checkpoints: python launch/evaluate.py run=<run or sweep dir> [hydra/launcher=slurm]

Locally the checkpoints are evaluated in sequence; with hydra/launcher=slurm the manifest is
written first and its entries run as one SLURM array (task=range(N)).
"""

import sys

import hydra
from omegaconf import DictConfig

from hpcgen.cli.evaluate import evaluate_array_argv, run_evaluate


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> list | dict:
    return run_evaluate(cfg)


if __name__ == "__main__":
    sys.argv[1:] = evaluate_array_argv(sys.argv[1:])
    main()
