"""launch/generate.py: one PNG per seed and a grid from a committed checkpoint."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from hpcgen.cli.compose import fail
from hpcgen.config import ConfigError


def run_generate(cfg: DictConfig) -> list[Path]:
    """One PNG per seed and a grid; a bad checkpoint is one line, status 2."""
    from hpcgen.engine.generate import generate, parse_seeds

    try:
        ckpt = Path(str(cfg.ckpt)).expanduser().resolve()
        seeds = parse_seeds(cfg.seeds, int(cfg.n))
        out = Path(cfg.out) if cfg.out else ckpt.parent.parent / "generated" / ckpt.name
        written = generate(
            ckpt,
            seeds,
            out,
            cfg.sampler,
            bool(cfg.grid),
            bool(cfg.individual),
            truncation_psi=cfg.get("psi"),
        )
    except MissingMandatoryValue:
        fail(
            "ckpt is required: python launch/generate.py "
            "ckpt=<run>/checkpoints/step_<8-digit step> n=16"
        )
    except (ConfigError, ValueError) as err:
        fail(err)
    print(f"[generate] {len(seeds)} image(s) from {ckpt} -> {out}")
    return written
