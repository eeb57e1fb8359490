#!/usr/bin/env python
"""Images from a checkpoint: python launch/generate.py ckpt=<run>/checkpoints/step_N n=64"""

import hydra
from omegaconf import DictConfig

from hpcgen.cli.generate import run_generate


@hydra.main(version_base="1.3", config_path="../configs", config_name="generate")
def main(cfg: DictConfig) -> None:
    run_generate(cfg)


if __name__ == "__main__":
    main()
