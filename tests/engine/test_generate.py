"""launch/generate.py on a real checkpoint: one PNG per seed, deterministic, clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hpcgen.engine.loop import train
from tests.conftest import REPO
from tests.engine.test_train_cpu import smoke_config

pytestmark = pytest.mark.slow


def generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "generate.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("model,extra", [("ddpm", ["sampler=ddim10"]), ("gan", [])])
def test_images_per_seed_do_not_depend_on_the_batch(model, extra, tmp_path):
    train(smoke_config(model, "trainer.max_steps=10"), tmp_path / "run")
    # the run's resolved config, as Hydra writes it for every job
    from omegaconf import OmegaConf

    from tests.conftest import compose_train

    cfg = compose_train([f"model={model}", "experiment=smoke", "trainer.max_steps=10"])
    (tmp_path / "run" / ".hydra").mkdir()
    OmegaConf.save(
        {k: v for k, v in cfg.items() if k != "hydra"}, tmp_path / "run" / ".hydra" / "config.yaml"
    )
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000010"
    five = generate(f"ckpt={ckpt}", "n=5", "seeds=3-7", f"out={tmp_path / 'a'}", *extra)
    assert five.returncode == 0, five.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "grid.png",
        *[f"seed_{s:06d}.png" for s in range(3, 8)],
    ]
    two = generate(f"ckpt={ckpt}", "seeds=[5,6]", f"out={tmp_path / 'b'}", *extra)
    assert two.returncode == 0, two.stderr[-2000:]
    for seed in (5, 6):
        a = np.asarray(Image.open(tmp_path / "a" / f"seed_{seed:06d}.png"))
        b = np.asarray(Image.open(tmp_path / "b" / f"seed_{seed:06d}.png"))
        assert a.shape == (16, 16, 3) and np.array_equal(a, b)
    a3 = np.asarray(Image.open(tmp_path / "a" / "seed_000003.png"))
    assert not np.array_equal(a3, np.asarray(Image.open(tmp_path / "a" / "seed_000004.png")))


@pytest.mark.parametrize(
    "args,message", [([], "ckpt is required"), (["ckpt=/no/such/ckpt"], "not a committed hpcgen")]
)
def test_a_missing_or_uncommitted_checkpoint_is_one_line_with_status_2(args, message):
    result = generate(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
