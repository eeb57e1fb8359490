"""Samples from a committed checkpoint, one fixed seed per image, without DeepSpeed or a cluster.

The run's own .hydra/config.yaml rebuilds the network; the weights come from the DeepSpeed
model-states file (ZeRO-1/2 keep the whole module there). Sample i depends only on seed i.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torchvision.utils import save_image

from hpcgen.config import ConfigError, TrainConfig
from hpcgen.engine.checkpoint import CheckpointError, verify
from hpcgen.engine.run_dir import model_states_file, rank_state_file
from hpcgen.networks import build_sampling_network, sample


def parse_seeds(spec: object, n: int) -> list[int]:
    """'0-63', a list [1, 5, 9] (Hydra: seeds=[1,5,9]) or None (0..n-1)."""
    if spec is None:
        return list(range(n))
    if not isinstance(spec, (str, int)):
        return [int(s) for s in spec]  # type: ignore[attr-defined]
    seeds: list[int] = []
    for part in str(spec).split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return seeds


def run_config(run_dir: Path) -> TrainConfig:
    """A run's typed config, rebuilt from the resolved .hydra/config.yaml Hydra wrote for it."""
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{config_file} is missing: this needs the run's resolved config")
    tree = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
    return TrainConfig.from_dict(tree)  # type: ignore[arg-type]


def load_network(ckpt: Path, device: torch.device) -> tuple[TrainConfig, torch.nn.Module]:
    """The run's config and its network (DDPM U-Net or GAN generator) with checkpoint weights."""
    cfg, net, _ = load_network_described(ckpt, device)
    return cfg, net


def load_network_described(
    ckpt: Path, device: torch.device
) -> tuple[TrainConfig, torch.nn.Module, dict]:
    """load_network, and what was loaded: {"weights": "ema" | "raw", "images_seen": N}."""
    manifest = _verify_any_world_size(ckpt)
    cfg = run_config(ckpt.parent.parent)
    engine, net = build_sampling_network(cfg, device.type == "cuda")
    # the EMA weights (full fp32, whatever the ZeRO stage); a checkpoint without them: the
    # trained weights from DeepSpeed's model states (ZeRO-1/2 only)
    task_state = torch.load(ckpt / rank_state_file(0), map_location="cpu", weights_only=True)
    module = task_state["task"].get("ema")
    if module is None:
        states = ckpt / model_states_file(engine)
        if model_states_file(engine) not in manifest["files"]:
            raise ConfigError(
                f"{ckpt} has neither EMA weights nor a full model-states file for {engine} "
                "(ZeRO-3 partitions weights): generate from a ZeRO-1/2 run"
            )
        module = torch.load(states, map_location="cpu", weights_only=False)["module"]
    net.load_state_dict({k: v.float() for k, v in module.items()})
    described = {
        "weights": "raw" if task_state["task"].get("ema") is None else "ema",
        "images_seen": task_state.get("images_seen"),
    }
    return cfg, net.to(device).eval(), described


def _verify_any_world_size(ckpt: Path) -> dict:
    """Sizes and sha256 of every file before anything of it is unpickled."""
    try:
        return verify(ckpt, hashes=True)
    except CheckpointError as err:
        raise ConfigError(
            f"ckpt={ckpt} is not a committed hpcgen checkpoint ({err}): give a "
            "checkpoints/step_<8-digit step> directory of a run"
        ) from err


def generate(
    ckpt: Path,
    seeds: list[int],
    out_dir: Path,
    sampler: str | None = None,
    grid: bool = True,
    individual: bool = True,
    batch: int = 64,
    truncation_psi: float | None = None,
) -> list[Path]:
    """Write one PNG per seed (and a grid); returns the written paths."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg, net = load_network(ckpt, device)
    images = sample(cfg, net, seeds, device, sampler, truncation_psi, batch)
    pictures = (images + 1) / 2  # (N, 3, R, R) in [0, 1]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if individual:
        for seed, picture in zip(seeds, pictures, strict=True):
            written.append(out_dir / f"seed_{seed:06d}.png")
            save_image(picture, written[-1])
    if grid:
        written.append(out_dir / "grid.png")
        save_image(pictures, written[-1], nrow=int(np.ceil(np.sqrt(len(seeds)))), padding=1)
    return written
