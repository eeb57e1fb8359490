"""ZeRO suite: parameter and optimizer-state bytes held by each rank, at world size 1 and 2, for
ZeRO 1/2/3 (target: the sharded part at 2 ranks at most 0.55x of 1 rank). Each configuration
runs in fresh processes (a process group is made once per process), ranks on the loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from hpcgen.engine.distributed import free_port, loopback_rank_env

WORKER = "hpcgen.benchmarks.zero"


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _measure(preset: str, resolution: int, stage: int) -> dict:
    """In a worker rank: one training step, then what this rank holds."""
    from hpcgen.config import DeepSpeedConfig
    from hpcgen.engine.deepspeed_engine import make_engine
    from hpcgen.engine.distributed import detect_layout, init_distributed
    from hpcgen.models.unet import build_unet

    layout = detect_layout()
    init_distributed(layout)
    torch.manual_seed(0)
    net = build_unet(preset, 3, resolution)
    engine = make_engine(
        net, 1e-4, (0.9, 0.999), 0.0, DeepSpeedConfig(zero_stage=stage), 2, layout.world_size
    )
    x = torch.randn(2, 3, resolution, resolution)
    t = torch.randint(0, 1000, (2,))
    engine.backward(engine(x, t).square().mean())
    engine.step()
    params = [getattr(p, "ds_tensor", p) for p in engine.module.parameters()]
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)  # torch's Adam(W) inside
    states = [v for s in inner.state.values() for v in s.values()]
    partitions = [p for g in inner.param_groups for p in g["params"]]
    return {
        "rank": layout.rank,
        "param_bytes": _bytes(params),
        "optimizer_state_bytes": _bytes(states),
        "fp32_partition_bytes": _bytes(partitions),
    }


def _launch(world: int, preset: str, resolution: int, stage: int, out: Path) -> list[dict]:
    port, procs = free_port(), []
    for rank in range(world):
        env = loopback_rank_env(rank, world, port)
        cmd = [
            sys.executable,
            "-m",
            WORKER,
            preset,
            str(resolution),
            str(stage),
            str(out / f"{rank}.json"),
        ]
        procs.append(subprocess.Popen(cmd, env=env))
    for p in procs:
        if p.wait(timeout=900) != 0:
            raise RuntimeError(f"zero bench worker failed (stage {stage}, world {world})")
    return [json.loads((out / f"{rank}.json").read_text()) for rank in range(world)]


def run(workdir: Path, preset: str, resolution: int, stages: list[int]) -> dict:
    result: dict = {
        "config": {
            "preset": preset,
            "resolution": resolution,
            "stages": stages,
            "precision": "fp32",
        },
        "targets": {"sharded_2_vs_1": "<= 0.55"},
    }
    for stage in stages:
        per_world = {}
        for world in (1, 2):
            out = workdir / "zero-bench" / f"stage{stage}-world{world}"
            out.mkdir(parents=True, exist_ok=True)
            per_world[world] = _launch(world, preset, resolution, stage, out)
        sharded = "param_bytes" if stage == 3 else "optimizer_state_bytes"
        one, two = per_world[1][0], max(per_world[2], key=lambda r: r[sharded])
        result[f"zero{stage}"] = {
            "world1": per_world[1],
            "world2": per_world[2],
            "sharded": sharded,
            "sharded_bytes_world1": one[sharded],
            "sharded_bytes_world2_max_rank": two[sharded],
            "sharded_2_vs_1": two[sharded] / one[sharded],
        }
    return result


if __name__ == "__main__":
    preset, resolution, stage, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    Path(path).write_text(json.dumps(_measure(preset, resolution, stage)))
