"""Checkpoint suite: seconds and bytes to save and to load a committed checkpoint (DeepSpeed
engines with AdamW state + hpcgen state, manifest with sha256) for each network preset."""

from __future__ import annotations

import itertools
from pathlib import Path

from hpcgen.benchmarks.common import measure
from hpcgen.config import DeepSpeedConfig
from hpcgen.engine.checkpoint import CheckpointManager
from hpcgen.engine.deepspeed_engine import make_engine
from hpcgen.engine.distributed import detect_layout, init_distributed
from hpcgen.models.stylegan import build_gan
from hpcgen.models.unet import build_unet

RESOLUTION = {"tiny": 16, "small": 32, "lsun64": 64, "lsun256": 256, "stylegan2": 64}


def _networks(spec: str) -> dict:
    model, preset = spec.split(":")
    if model == "ddpm":
        return {"unet": build_unet(preset, 3, RESOLUTION[preset])}
    generator, discriminator = build_gan(preset, RESOLUTION[preset])
    return {"generator": generator, "discriminator": discriminator}


def run(workdir: Path, presets: list[str], repeats: int) -> dict:
    init_distributed(detect_layout())
    result: dict = {"config": {"presets": presets, "zero_stage": 2, "precision": "fp32"}}
    for spec in presets:
        nets = _networks(spec)
        engines = {
            k: make_engine(v, 1e-4, (0.9, 0.999), 0.0, DeepSpeedConfig(zero_stage=2), 1, 1)
            for k, v in nets.items()
        }
        ckpts = CheckpointManager(workdir / "checkpoint-bench" / spec.replace(":", "-"), 0, 1, 1)
        steps = itertools.count(1)
        saved = {}

        def save(engines=engines, ckpts=ckpts, steps=steps, saved=saved):
            saved["path"] = ckpts.save(next(steps), engines, {"step": 0})

        save_times = measure(save, repeats, warmup=1)
        size = sum(f.stat().st_size for f in saved["path"].rglob("*") if f.is_file())
        load_times = measure(
            lambda ckpts=ckpts, saved=saved, engines=engines: ckpts.load(saved["path"], engines),
            repeats,
            warmup=1,
        )
        result[spec] = {
            "parameters": sum(p.numel() for n in nets.values() for p in n.parameters()),
            "bytes": size,
            "save": save_times,
            "load": load_times,
        }
    return result
