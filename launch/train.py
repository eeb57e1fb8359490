#!/usr/bin/env python
"""Train a DDPM or a GAN: python launch/train.py [-m] model=ddpm,gan [hydra/launcher=slurm] ...

Every job of the sweep is composed and checked first (bad config: one line, exit 2), then
Hydra launches them: in this process (hydra/launcher=local) or on SLURM (hydra/launcher=slurm).
dry_run=true prints what the sweep would create and cost, and runs nothing.
"""

import sys

import hydra
from omegaconf import DictConfig

from hpcgen.cli.train import dry_run_or_continue, preflight_or_exit, run_job


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> dict:
    return run_job(cfg)


if __name__ == "__main__":
    dry_run_or_continue(sys.argv[1:])
    preflight_or_exit(sys.argv[1:])
    main()
