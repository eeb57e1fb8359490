#!/usr/bin/env python
"""Image sources to webdataset shards: python launch/prepare.py data=... data.source=...

With hydra/launcher=slurm it becomes an array of num_tasks tasks (default 8), one per shard
range. Every job is checked first (bad source: one line, exit 2).
"""

import sys

import hydra
from omegaconf import DictConfig

from hpcgen.cli.prepare import preflight_or_exit, prepare_array_argv, run_prepare


@hydra.main(version_base="1.3", config_path="../configs", config_name="prepare")
def main(cfg: DictConfig) -> dict | None:
    return run_prepare(cfg)


if __name__ == "__main__":
    sys.argv[1:] = prepare_array_argv(sys.argv[1:])
    preflight_or_exit(sys.argv[1:], config_name="prepare")
    main()
