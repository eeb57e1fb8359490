"""Data parallelism is exact: 2 ranks x B under ZeRO reach the weights of 1 rank x 2B.

Each rank is a separate process on the loopback (gloo), as torchrun would start them, training
the real DDPMTask / GANTask; both runs take the same global batches
(tests/engine/multirank_worker.py explains the split)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from hpcgen.engine.distributed import free_port, loopback_rank_env
from tests.conftest import REPO

pytestmark = pytest.mark.slow
STEPS = 3


def launch(world: int, model: str, stage: int, global_batch: int, out) -> dict:
    port, procs = free_port(), []
    for rank in range(world):
        env = loopback_rank_env(rank, world, port)
        args = [model, str(stage), str(global_batch), str(STEPS), str(out)]
        cmd = [sys.executable, "-m", "tests.engine.multirank_worker", *args]
        procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return torch.load(out, weights_only=True)


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("model,stage", [("ddpm", 2), ("gan", 2), ("ddpm", 1)])
def test_two_ranks_match_one_rank_with_twice_the_batch(model, stage, tmp_path):
    one = launch(1, model, stage, 8, tmp_path / "one.pt")
    two = launch(2, model, stage, 8, tmp_path / "two.pt")
    half = launch(1, model, stage, 4, tmp_path / "half.pt")  # one rank's share of the batch
    # float32 sums in another order, amplified by Adam's g / sqrt(v); measured here with the real
    # tasks: DDPM 3.1e-6 (ZeRO-1 and 2) against 6e-3 for `half`; GAN (R1's double backward, the
    # reference-aligned D) 1.9e-4 against 1.1e-2
    tolerance = 2e-5 if model == "ddpm" else 5e-4
    two_vs_one, half_vs_one = max_difference(one, two), max_difference(one, half)
    print(f"{model} ZeRO-{stage}: 2 ranks vs 1 {two_vs_one:.2e}, half batch {half_vs_one:.2e}")
    assert two_vs_one < tolerance
    # the check has teeth: leaving out half the batch moves the weights far beyond it
    assert half_vs_one > 20 * max(two_vs_one, tolerance / 25)
