"""Evaluation while training runs (eval.during_training, engine/eval_queue.py): each milestone's
evaluation is its own job, a killed one is resubmitted by the next submission, and retention
keeps a checkpoint until its evaluation ran."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from hpcgen import slurm
from hpcgen.cli.compose import to_train_config
from hpcgen.cli.preflight import preflight
from hpcgen.config import ConfigError
from hpcgen.console import fid_curve
from hpcgen.engine.checkpoint import CheckpointManager
from hpcgen.engine.eval_queue import EvalQueue, read_submission, write_submission
from hpcgen.engine.run_dir import (
    COMMIT_MANIFEST,
    checkpoint_dir,
    checkpoint_path,
    result_path,
    result_paths,
)
from hpcgen.report import build_report
from hpcgen.status import sweep_status
from tests.conftest import REPO, compose_train, run_train

# tiny evaluations: the tiny-test extractor on 32 images (not comparable to published FIDs)
SETTINGS = (
    "eval.settings={extractor:tiny-test,num_samples:32,ref_samples:128,kid_subsets:5,"
    "kid_subset_size:32}"
)
MILESTONES = ["trainer.max_steps=30", "trainer.ckpt_every_steps=10",
              "trainer.ckpt_milestone_every_steps=10"]  # fmt: skip


def test_evaluation_during_training_without_milestones_is_refused_naming_the_fix():
    with pytest.raises(ConfigError, match=r"trainer.ckpt_milestone_every_steps=0 makes none"):
        to_train_config(compose_train(["eval.during_training=true"]))
    off_the_saves = ["eval.during_training=true", "trainer.ckpt_milestone_every_steps=150"]
    with pytest.raises(ConfigError, match=r"use a multiple of 100"):
        to_train_config(compose_train(off_the_saves))
    bad_setting = ["eval.during_training=true", "trainer.ckpt_milestone_every_steps=100",
                   "eval.settings={num_sampels:10}"]  # fmt: skip
    with pytest.raises(ConfigError, match=r"unknown key eval.settings.num_sampels"):
        preflight(bad_setting)


def _fake_checkpoints(run_dir, steps):
    for step in steps:
        ckpt = checkpoint_path(checkpoint_dir(run_dir), step)
        ckpt.mkdir(parents=True)
        (ckpt / COMMIT_MANIFEST).write_text("{}")


def test_retention_keeps_a_checkpoint_whose_evaluation_is_pending(tmp_path):
    _fake_checkpoints(tmp_path, (10, 20, 30, 40))
    ckpts = CheckpointManager(tmp_path, rank=0, world_size=1, keep_last=1)
    step_10 = checkpoint_path(ckpts.dir, 10)
    write_submission(step_10, {"entries": [], "committed": 0.0, "jobs": []})
    ckpts.prune(keep_name="step_00000040")
    assert [c.name for c in ckpts.committed()] == ["step_00000010", "step_00000040"]
    result_path(step_10).write_text("{}")  # its evaluation ran: an ordinary checkpoint again
    ckpts.prune(keep_name="step_00000040")
    assert [c.name for c in ckpts.committed()] == ["step_00000040"]


def _submitted_jobs(run_dir) -> list[str]:
    ids = []
    for ckpt in sorted(checkpoint_dir(run_dir).glob("step_*")):
        ids += [j["job_id"] for j in (read_submission(ckpt) or {}).get("jobs", [])]
    return ids


def _wait_for_results(run_dir, steps, timeout_s=300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(result_path(checkpoint_path(checkpoint_dir(run_dir), s)).is_file() for s in steps):
            return
        time.sleep(1.0)
    logs = "".join(p.read_text()[-1500:] for p in (run_dir / "eval").glob("submitted/*.out"))
    pytest.fail(f"no results for {steps} after {timeout_s:.0f}s; queue {_squeue()}; logs {logs}")


def _squeue() -> str:
    return subprocess.run(["squeue"], capture_output=True, text=True, timeout=30).stdout


@pytest.mark.slow
@pytest.mark.slurm
def test_gan_run_on_slurm_evaluates_three_milestones_while_it_trains(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    # long enough (about 20 s here) for a result to come in while it trains: each evaluation
    # job takes about 5 s
    every_100 = [
        "trainer.max_steps=300",
        "trainer.ckpt_every_steps=100",
        "trainer.ckpt_milestone_every_steps=100",
        "trainer.sample_every_steps=100",
    ]
    args = ["-m", "model=gan", "experiment=smoke", "hydra/launcher=slurm", *every_100,
            "trainer.keep_last_ckpts=1", "eval.during_training=true", "eval.cpus_per_task=1",
            SETTINGS, f"hydra.sweep.dir={sweep}"]  # fmt: skip
    train = subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "train.py"), *args],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen_while_running = []  # what status showed while the training job ran
    while train.poll() is None:
        if (sweep / "0" / "run.json").is_file():
            (row,) = sweep_status(sweep)["jobs"]
            if row["state"] == "RUNNING":
                seen_while_running.append(row["evaluation"])
        time.sleep(0.5)
    output = train.stdout.read()
    assert train.returncode == 0, output[-4000:]
    run_dir = sweep / "0"
    jobs = _submitted_jobs(run_dir)
    assert len(jobs) == 3, f"one evaluation job per milestone: {jobs}"
    shown = [fid_curve(e) for e in seen_while_running if e["pending"]]
    assert any(f"pending: {jobs[0]}" in cell for cell in shown), shown
    assert any(e["fid_curve"] for e in seen_while_running), "the curve fills in while it trains"
    _wait_for_results(run_dir, (100, 200, 300))
    slurm.wait_until_finished(jobs)
    status = sweep_status(sweep)
    (row,) = status["jobs"]
    assert [s for s, _ in row["evaluation"]["fid_curve"]] == [100, 200, 300]
    assert row["evaluation"]["pending"] == [] and not status["next"]
    assert "FID vs step" in build_report(sweep)
    after = [
        json.loads(p.read_text())["jobs"][0]["seconds_after_commit"]
        for p in sorted((run_dir / "eval" / "submitted").glob("step_*.json"))
    ]
    print(f"seconds between commit and submission: {after}; curve while running: "
          f"{[e['fid_curve'] for e in seen_while_running][-1:]}")  # fmt: skip
    assert max(after) < 10.0


@pytest.mark.slow
@pytest.mark.slurm
def test_a_killed_evaluation_is_resubmitted_and_its_checkpoint_kept_until_it_ran(
    slurm_cluster, tmp_path
):
    run_dir = tmp_path / "run"
    trained = run_train(
        ["model=gan", "experiment=smoke", "trainer.ckpt_every_steps=10",
         "trainer.keep_last_ckpts=3", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    on = ["trainer.max_steps=20", *MILESTONES[1:], "eval.during_training=true",
          "eval.cpus_per_task=1", SETTINGS]  # fmt: skip
    cfg = to_train_config(compose_train(["model=gan", "experiment=smoke", *on]))
    queue = EvalQueue(run_dir, cfg, is_main=True)
    step_10, step_20 = (checkpoint_path(checkpoint_dir(run_dir), s) for s in (10, 20))
    killed = queue.sbatch(step_10)
    subprocess.run(["scancel", killed], check=True, timeout=30)
    slurm.wait_until_finished([killed])
    # a non-milestone checkpoint without a result stays while its evaluation is pending
    CheckpointManager(run_dir, 0, 1, keep_last=1).prune(keep_name=step_20.name)
    assert step_10.is_dir() and not result_paths(run_dir)
    queue._submit(step_20)  # what step 20's commit runs, in its background thread
    jobs = read_submission(step_10)["jobs"]
    assert len(jobs) == 2 and jobs[0]["job_id"] == killed, jobs
    _wait_for_results(run_dir, (10, 20))
    slurm.wait_until_finished(_submitted_jobs(run_dir))
    CheckpointManager(run_dir, 0, 1, keep_last=1).prune(keep_name=step_20.name)
    assert not step_10.is_dir(), "evaluated: retention treats it as any other checkpoint"


@pytest.mark.slow
def test_without_slurm_the_queued_evaluations_run_when_training_ends(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_train(
        ["model=gan", "experiment=smoke", *MILESTONES[1:], "trainer.max_steps=20",
         "eval.during_training=true", SETTINGS, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    assert [json.loads(p.read_text())["step"] for p in result_paths(run_dir)] == [10, 20]
    assert all(read_submission(c)["jobs"] == [] for c in checkpoint_dir(run_dir).glob("step_*"))
    assert sweep_status(run_dir)["jobs"][0]["evaluation"]["pending"] == []
