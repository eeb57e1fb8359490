"""Dry-run plans: checkpoints saved and kept, and device-hours from a measured rate."""

from __future__ import annotations

import json

import pytest

from hpcgen.cli.compose import to_train_config
from hpcgen.cli.dry_run import wants_dry_run
from hpcgen.config import TrainConfig
from hpcgen.plan import (
    CPU_MEASURED,
    checkpoint_steps,
    describe,
    gpu_bench_throughputs,
    plan_job,
    train_flops_per_image,
)
from tests.conftest import compose_train, run_train


def experiment(name: str, *extra: str) -> TrainConfig:
    return to_train_config(compose_train([f"experiment={name}", *extra]))


def test_checkpoints_kept_are_the_milestones_and_the_last_ones():
    saved, kept = checkpoint_steps(experiment("report_gan"))  # milestone = every checkpoint
    assert len(saved) == len(kept) == 30 and kept[-1] == 9600
    saved, kept = checkpoint_steps(experiment("lsun256_stylegan2"))
    assert len(saved) == 125 and len(kept) == 25 + 2  # last 3: one of them is a milestone
    cfg = experiment("smoke", "trainer.max_steps=25")  # ckpt every 10: 10, 20 and the last, 25
    assert checkpoint_steps(cfg) == ([10, 20, 25], [10, 20, 25])


def test_measured_network_is_projected_at_its_rate_on_the_cpu():
    cfg = experiment("smoke", "model.preset=small", "data.resolution=32", "trainer.global_batch=16")
    plan = plan_job(cfg, world_size=1)
    assert plan.images == 20 * 16
    assert plan.device_hours == pytest.approx(320 / CPU_MEASURED["ddpm"].images_per_s / 3600)
    assert not plan.on_gpu and "a CPU extrapolation" in plan.basis


def test_other_networks_scale_by_flops_per_image():
    small = train_flops_per_image("ddpm", "small", 32)
    assert train_flops_per_image("ddpm", "small", 64) == pytest.approx(4 * small, rel=0.02)
    plan = plan_job(experiment("report_gan"), world_size=8)
    assert plan.wall_hours == pytest.approx(plan.device_hours / 8)
    assert "scaled by FLOPs per image" in plan.basis


def test_a_gpu_bench_result_replaces_the_cpu_figure(tmp_path):
    bench = tmp_path / "gpu.json"
    case = {"config": {"model": "ddpm", "preset": "hf64", "resolution": 64, "precision": "bf16"},
            "images_per_s": 400.0}  # fmt: skip
    bench.write_text(json.dumps({"device": "NVIDIA H200", "ddpm:hf64:64:64": case}))
    plan = plan_job(experiment("report_ddpm"), 8, gpu_bench_throughputs(bench))
    assert plan.on_gpu and plan.device_hours == pytest.approx(947_825 * 16 / 400 / 3600)
    text = describe(plan, 8)
    assert "GPU-hours" in text and "NVIDIA H200" in text and "CPU" not in text


def test_dry_run_prints_every_jobs_plan_and_runs_nothing(tmp_path, hpcgen_dirs):
    before = sorted(hpcgen_dirs["out"].rglob("*")) if hpcgen_dirs["out"].exists() else []
    result = run_train(["-m", "experiment=smoke,report_gan", "dry_run=true"], cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 2, result.stderr  # report_gan's LSUN shards are not there
    assert "job 0: ddpm tiny 16 px on 1 rank(s), 1 node(s)" in out
    assert "generator 22,243,608, discriminator 23,407,361 parameters" in out
    assert "checkpoints: 30 saved, 30 kept" in out and "a CPU extrapolation" in out
    assert "  would fail: data.root=" in out and out.count("would fail:") == 1
    assert "dry run: 2 job(s) on 2 node(s) in all" in out and "nothing was run" in out
    after = sorted(hpcgen_dirs["out"].rglob("*")) if hpcgen_dirs["out"].exists() else []
    assert after == before and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv,wanted",
    [(["dry_run=true"], True), (["-m", "dry_run=yes"], True), (["dry_run=false"], False),
     (["dry_run=true", "dry_run=false"], False), (["model=gan"], False)],
)  # fmt: skip
def test_dry_run_is_read_as_omegaconf_reads_a_boolean(argv, wanted):
    assert wants_dry_run(argv) is wanted


def test_a_runs_saved_config_with_the_launch_keys_still_builds():
    # .hydra/config.yaml of a run holds train.yaml's dry_run and gpu_bench (generate, evaluate)
    tree = {"model": {"name": "ddpm"}, "dry_run": False, "gpu_bench": None, "seed": 3}
    assert TrainConfig.from_dict(tree).seed == 3
