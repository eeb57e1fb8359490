"""Real DeepSpeed (CPU accelerator, gloo) training of both models, checkpoints and resume."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from PIL import Image

from hpcgen.cli.compose import to_train_config
from hpcgen.engine.checkpoint import CheckpointError, CheckpointManager, verify
from hpcgen.engine.loop import train
from hpcgen.engine.run_dir import (
    COMMIT_MANIFEST,
    checkpoint_dir,
    checkpoint_path,
    latest_file,
    latest_name,
    model_states_file,
    rank_state_file,
    step_name,
)
from tests.conftest import compose_train, run_train

pytestmark = pytest.mark.slow


def smoke_config(model: str, *extra: str):
    return to_train_config(compose_train([f"model={model}", "experiment=smoke", *extra]))


def weights(run_dir, step, engine):
    path = checkpoint_path(checkpoint_dir(run_dir), step) / model_states_file(engine)
    return torch.load(path, weights_only=False)["module"]


@pytest.mark.parametrize("model", ["ddpm", "gan"])
def test_training_writes_the_run_directory(model, tmp_path):
    result = train(smoke_config(model), tmp_path, ["experiment=smoke"])
    assert result["step"] == 20
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "completed" and run["model"] == model and run["step"] == 20
    assert run["world_size"] == 1 and run["preemptions"] == 0 and "git_revision" in run
    networks = {"ddpm": {"unet"}, "gan": {"generator", "discriminator"}}[model]
    assert set(run["parameters"]) == networks and all(n > 1000 for n in run["parameters"].values())
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [5, 10, 15, 20]
    assert all(m["images_per_s"] > 0 for m in metrics)
    for name in networks:  # the engine's own numbers, per network
        assert all(m[f"lr_{name}"] > 0 and m[f"grad_norm_{name}"] > 0 for m in metrics)
    assert all(0 < m["max_rss_gb"] < 64 for m in metrics)
    grid = Image.open(tmp_path / "samples" / "step_00000020.png")
    assert grid.size == (3 * 17 + 1, 3 * 17 + 1)  # 8 samples of 16 px, 3 per row, 1 px padding
    assert latest_name(checkpoint_dir(tmp_path)) == "step_00000020"
    manifest = verify(tmp_path / "checkpoints" / "step_00000020", world_size=1, hashes=True)
    assert manifest["step"] == 20
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    # one rank shards nothing: DeepSpeed's stage 0 whatever deepspeed=zero2 says
    assert manifest["zero_stage"] == run["zero_stage"] == 0
    assert not [name for name in manifest["files"] if "zero_pp_rank" in name]


def test_losses_go_down_on_the_toy_bedrooms(tmp_path):
    # the zero-initialised ADM net starts at L = E[eps^2] = 1; a tiny one wants a larger lr
    train(smoke_config("ddpm", "trainer.max_steps=60", "model.lr=2e-3"), tmp_path)
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "metrics.jsonl")]
    assert losses[-1] < 0.6 * losses[0], losses


def test_tiny_gan_learns_to_tell_real_from_fake(tmp_path):
    train(smoke_config("gan", "trainer.max_steps=40", "trainer.log_every_steps=1"), tmp_path)
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    gap = [line["d_real"] - line["d_fake"] for line in lines]  # D(real) - D(fake), logits
    assert len(gap) == 40 and sum(gap[-5:]) / 5 > sum(gap[:5]) / 5 + 0.5, gap
    assert "r1" in lines[0] and "r1" not in lines[1]  # lazy: every 16th step
    assert Image.open(tmp_path / "augment.png").size == (7 * 17 + 1, 13 * 17 + 1)  # Figure 7
    assert all(0.0 <= line["ada_p"] <= 1.0 for line in lines)


@pytest.mark.parametrize(
    "model,extra",
    [
        ("ddpm", []),
        (
            "ddpm",
            [
                "model.loss=hybrid",
                "model.variance=learned_range",
                "model.timestep_sampler=loss_aware",
                "model.diffusion_steps=10",
                "model.schedule=cosine",  # linear's betas pass 1 below 21 steps
                "model.sampler=ddpm",
                "deepspeed.warmup_steps=15",  # the schedule's position is restored too
            ],
        ),
        ("gan", []),
        ("ddpm", ["trainer.compile=true"]),
        # R1 (steps 0, 16) and path length (every 4th) differentiate twice: eager forwards
        ("gan", ["trainer.compile=true", "model.pl_weight=2"]),
    ],
    ids=["ddpm", "ddpm-hybrid-loss-aware", "gan", "ddpm-compiled", "gan-compiled-r1-pl"],
)
def test_resumed_run_matches_uninterrupted_run(model, extra, tmp_path):
    from torch._dynamo.utils import counters

    straight, split = tmp_path / "straight", tmp_path / "split"
    counters.clear()
    train(smoke_config(model, *extra), straight)
    train(smoke_config(model, "trainer.max_steps=10", *extra), split)
    train(smoke_config(model, *extra), split)  # resumes from step 10
    if "trainer.compile=true" in extra:  # dynamo compiled graphs, and the run said how long
        assert counters["stats"]["unique_graphs"] >= 2, dict(counters["stats"])
        assert json.loads((split / "run.json").read_text())["compile_first_step_s"] > 0
    else:
        assert not counters["stats"]["unique_graphs"]
    for engine in {"ddpm": ["unet"], "gan": ["generator", "discriminator"]}[model]:
        a, b = weights(straight, 20, engine), weights(split, 20, engine)
        for name in a:
            assert torch.equal(a[name], b[name]), f"{engine}.{name} differs after resume"


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    train(smoke_config("ddpm"), tmp_path)
    ckpts = CheckpointManager(tmp_path, rank=0, world_size=1, keep_last=2)
    broken = tmp_path / "checkpoints" / "step_00000020" / rank_state_file(0)
    broken.write_bytes(broken.read_bytes()[:100])
    assert ckpts.find_latest() == tmp_path / "checkpoints" / "step_00000010"
    assert "skipping checkpoint" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "checkpoints" / "step_00000010")
    with pytest.raises(CheckpointError, match="none verifies"):
        ckpts.find_latest()


def test_uncommitted_checkpoint_is_never_loaded(tmp_path):
    train(smoke_config("ddpm", "trainer.max_steps=10"), tmp_path)
    step10 = tmp_path / "checkpoints" / "step_00000010"
    (step10 / COMMIT_MANIFEST).rename(tmp_path / "COMMITTED.bak")
    ckpts = CheckpointManager(tmp_path, rank=0, world_size=1, keep_last=2)
    with pytest.raises(CheckpointError, match="none verifies"):
        ckpts.find_latest()
    with pytest.raises(CheckpointError, match="never committed"):
        verify(step10)


def test_local_multirun_trains_both_models_and_prints_the_table(tmp_path):
    result = run_train(
        ["-m", "model=ddpm,gan", "experiment=smoke", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job, model in ((0, "ddpm"), (1, "gan")):
        run = json.loads((tmp_path / "sweep" / str(job) / "run.json").read_text())
        assert run["model"] == model and run["status"] == "completed"
        assert (tmp_path / "sweep" / str(job) / ".hydra" / "config.yaml").is_file()
    out = result.stdout
    assert "hpcgen sweep" in out and out.count("COMPLETED") == 2
    assert "ddpm" in out and "gan" in out and "20/20" in out


@pytest.mark.parametrize(
    "options",
    [
        ["model.schedule=cosine", "model.parameterisation=x0", "model.sampler=ddim10"],
        ["model.variance=learned_range", "model.loss=hybrid", "model.sampler=ddpm20"],
        ["model.parameterisation=mu", "model.variance=fixed_large", "model.loss=vlb"],
    ],
    ids=["cosine-x0-ddim", "learned-hybrid", "mu-large-vlb"],
)
def test_ddpm_variants_train_and_sample(options, tmp_path):
    result = train(smoke_config("ddpm", "trainer.max_steps=10", *options), tmp_path)
    losses = result["last_losses"]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    if "model.loss=hybrid" in options:
        assert set(losses) == {"loss", "mse", "vlb"}
    grid = Image.open(tmp_path / "samples" / "step_00000010.png")
    assert grid.size == (52, 52)


def test_zero3_run_keeps_an_ema_that_generate_uses(tmp_path):
    zero3 = ["deepspeed=zero3", "deepspeed.unsharded_at_one_rank=false"]
    train(smoke_config("gan", *zero3, "trainer.max_steps=10"), tmp_path)
    manifest = verify(tmp_path / "checkpoints" / "step_00000010")
    assert manifest["zero_stage"] == 3, "ZeRO-3 on one rank when asked for"
    ckpt = tmp_path / "checkpoints" / "step_00000010"
    state = torch.load(ckpt / rank_state_file(0), weights_only=True)
    ema = state["task"]["ema"]
    assert "synthesis.b16.conv1.weight" in ema and state["task"]["images_seen"] == 80
    # ZeRO-3 partitions the trained weights: the EMA is the full network, in fp32
    from omegaconf import OmegaConf

    from hpcgen.engine.generate import load_network

    cfg = compose_train(["model=gan", "experiment=smoke", *zero3])
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save({k: v for k, v in cfg.items() if k != "hydra"}, tmp_path / ".hydra/config.yaml")
    _, net = load_network(ckpt, torch.device("cpu"))
    assert torch.equal(
        net.state_dict()["synthesis.b16.conv1.weight"], ema["synthesis.b16.conv1.weight"]
    )


def test_learning_rate_warms_up_linearly_and_adam_is_selectable(tmp_path):
    extra = ["deepspeed.warmup_steps=10", "deepspeed.optimizer=adam", "model.lr=1e-3"]
    train(
        smoke_config("ddpm", "trainer.max_steps=12", "trainer.log_every_steps=1", *extra), tmp_path
    )
    lrs = [json.loads(line)["lr_unet"] for line in open(tmp_path / "metrics.jsonl")]
    assert lrs[0] == pytest.approx(2e-4) and lrs[4] == pytest.approx(6e-4)
    assert lrs[9:] == pytest.approx([1e-3] * 3)


def test_learning_rate_decays_along_a_cosine_after_the_warm_up(tmp_path):
    schedule = ["deepspeed.warmup_steps=4", "deepspeed.lr_schedule=cosine"]
    extra = [*schedule, "deepspeed.min_lr_ratio=0.1", "model.lr=1e-3", "trainer.log_every_steps=1"]
    train(smoke_config("ddpm", "trainer.max_steps=12", *extra), tmp_path)
    lrs = [json.loads(line)["lr_unet"] for line in open(tmp_path / "metrics.jsonl")]
    # logged after step s: the rate of step s+1; warm-up 1/4..4/4, then 8 steps of half-cosine
    expected = [(s + 1) / 4 if s < 4 else 0.1 + 0.45 * (1 + math.cos(math.pi * (s - 4) / 8))
                for s in range(1, 13)]  # fmt: skip
    assert lrs == pytest.approx([1e-3 * f for f in expected])
    assert lrs[3] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)


def test_tensorboard_gets_scalars_and_sample_grids_once_per_step_across_a_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["trainer.max_steps=12", "trainer.log_every_steps=1", "trainer.ckpt_every_steps=6"]
    cfg = ["logger.tensorboard=true", "trainer.sample_every_steps=6", *args]
    train(smoke_config("gan", *cfg), tmp_path)
    # as if killed after logging step 12 but before committing its checkpoint
    shutil.rmtree(tmp_path / "checkpoints" / "step_00000012")
    latest_file(checkpoint_dir(tmp_path)).write_text(step_name(6) + "\n")
    train(smoke_config("gan", *cfg), tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/loss_d", "loss/loss_g", "lr/generator", "train/ada_p"} <= set(tags["scalars"])
    logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    scalars = events.Scalars("loss/loss_g")
    assert [s.step for s in scalars] == list(range(1, 13))  # no step twice after the resume
    assert [s.value for s in scalars] == pytest.approx([m["loss_g"] for m in logged])
    images = events.Images("samples")
    assert [i.step for i in images] == [6, 12] and images[0].width > 16


def test_a_run_whose_loss_goes_nan_stops_with_one_line_instead_of_training_nan(tmp_path):
    """lr 1e6: the weights blow up within a few steps; the run stops at the first logged NaN."""
    done = run_train(["model=ddpm", "experiment=smoke", "model.lr=1e6", "trainer.log_every_steps=1",
                      f"hydra.run.dir={tmp_path}"], tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("hpcgen: error:")]
    assert "the loss is not finite at step" in line and "deepspeed.grad_clip" in line
    assert "Traceback" not in done.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "failed" and "Diverged" in run["error"] and run["step"] < 20
