#!/usr/bin/env python
"""Stage the FID Inception weights offline: python launch/stage_weights.py [force=true]"""

import hydra
from omegaconf import DictConfig

from hpcgen.cli.stage_weights import run_stage_weights


@hydra.main(version_base="1.3", config_path="../configs", config_name="stage_weights")
def main(cfg: DictConfig) -> dict:
    return run_stage_weights(cfg)


if __name__ == "__main__":
    main()
