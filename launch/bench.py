#!/usr/bin/env python
"""Benchmarks: python launch/bench.py suite=data. A table, and <run>/bench/<suite>.json."""

import hydra
from omegaconf import DictConfig

from hpcgen.cli.bench import run_bench


@hydra.main(version_base="1.3", config_path="../configs", config_name="bench")
def main(cfg: DictConfig) -> dict:
    return run_bench(cfg)


if __name__ == "__main__":
    main()
