"""Preemption in one process: a signal mid-run saves, exits as Preempted, and resumes exactly."""

from __future__ import annotations

import json
import os
import pickle
import signal
import threading
import time

import pytest
import torch

from hpcgen.engine.checkpoint import CheckpointError, CheckpointManager
from hpcgen.engine.loop import train
from hpcgen.engine.preemption import Preempted
from hpcgen.engine.run_dir import (
    checkpoint_dir,
    commit_manifest,
    committed_checkpoints,
    latest_name,
    latest_step,
    rank_state_file,
)
from hpcgen.engine.run_record import last_metrics
from tests.engine.test_train_cpu import smoke_config, weights

pytestmark = pytest.mark.slow


def signal_at_step(run_dir, step: int, signum: int) -> threading.Thread:
    """Send `signum` to this process once metrics.jsonl reaches `step`."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if last_metrics(run_dir).get("step", 0) >= step:
                os.kill(os.getpid(), signum)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM])
def test_signal_saves_at_the_next_step_and_resume_matches_the_reference(signum, tmp_path):
    args = ["trainer.max_steps=120", "trainer.log_every_steps=1", "trainer.ckpt_every_steps=50"]
    reference, run = tmp_path / "reference", tmp_path / "run"
    train(smoke_config("ddpm", *args), reference)
    watcher = signal_at_step(run, 30, signum)
    with pytest.raises(Preempted):
        train(smoke_config("ddpm", *args), run)
    watcher.join()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "preempted" and record["preemptions"] == 1
    saved = latest_step(run)
    assert 30 <= saved < 120 and saved == record["step"]  # nothing lost: saved where it stopped
    train(smoke_config("ddpm", *args), run)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["preemptions"] == 1
    events = [(e["event"], e["step"]) for e in record["events"]]
    assert events == [("started", 0), ("preempted", saved), ("resumed", saved), ("completed", 120)]
    steps = [json.loads(line)["step"] for line in open(run / "metrics.jsonl")]
    assert steps == list(range(1, 121)), "metrics.jsonl must have no gap and no repeat"
    a, b = weights(reference, 120, "unet"), weights(run, 120, "unet")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lines_logged_after_the_resumed_checkpoint_are_dropped(tmp_path):
    train(smoke_config("ddpm", "trainer.max_steps=10", "trainer.log_every_steps=1"), tmp_path)
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a crash after logging step 11 and 12
        f.write('{"step": 11}\n{"step": 12}\n')
    train(smoke_config("ddpm", "trainer.max_steps=12", "trainer.log_every_steps=1"), tmp_path)
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert steps == list(range(1, 13))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch EXPLOITED",))


def test_a_checkpoint_file_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train(smoke_config("ddpm", "trainer.max_steps=10"), tmp_path)
    state_file = tmp_path / "checkpoints" / "step_00000010" / rank_state_file(0)
    with open(state_file, "wb") as f:
        pickle.dump({"step": _Exploit()}, f)
    ckpts = CheckpointManager(tmp_path, rank=0, world_size=1, keep_last=3)
    task_engines: dict = {}
    with pytest.raises(CheckpointError, match="refusing to load it"):
        ckpts.load(tmp_path / "checkpoints" / "step_00000010", task_engines)
    assert not (tmp_path / "EXPLOITED").exists()


def test_retention_keeps_the_last_k_and_the_milestones(tmp_path):
    train(
        smoke_config(
            "ddpm",
            "trainer.max_steps=60",
            "trainer.ckpt_every_steps=5",
            "trainer.keep_last_ckpts=2",
            "trainer.ckpt_milestone_every_steps=20",
        ),
        tmp_path,
    )
    kept = sorted(p.name for p in checkpoint_dir(tmp_path).glob("step_*"))  # committed or not
    assert kept == ["step_00000020", "step_00000040", "step_00000055", "step_00000060"]


def test_no_valid_checkpoint_stops_or_with_the_flag_starts_over_keeping_the_files(tmp_path):
    train(smoke_config("ddpm", "trainer.max_steps=10"), tmp_path)
    for manifest in map(commit_manifest, committed_checkpoints(checkpoint_dir(tmp_path))):
        manifest.write_text("{ not json")
    with pytest.raises(CheckpointError, match="allow_fresh_start_on_corrupt=true"):
        train(smoke_config("ddpm", "trainer.max_steps=10"), tmp_path)
    train(
        smoke_config("ddpm", "trainer.max_steps=10", "trainer.allow_fresh_start_on_corrupt=true"),
        tmp_path,
    )
    assert len(list(tmp_path.glob("checkpoints.unverified-*/step_00000010"))) == 1
    assert latest_name(checkpoint_dir(tmp_path)) == "step_00000010"


def test_a_save_killed_half_way_is_ignored_and_replaced(tmp_path):
    train(smoke_config("ddpm", "trainer.max_steps=10"), tmp_path)
    half = tmp_path / "checkpoints" / ".tmp-step_00000020"  # what a SIGKILL mid-save leaves
    (half / "unet").mkdir(parents=True)
    (half / "unet" / "partial.pt").write_bytes(b"\x00" * 100)
    assert CheckpointManager(tmp_path, 0, 1, 3).find_latest().name == "step_00000010"
    train(smoke_config("ddpm", "trainer.max_steps=20"), tmp_path)
    assert not half.exists()
    assert latest_name(checkpoint_dir(tmp_path)) == "step_00000020"


def test_a_finished_run_started_again_does_nothing(tmp_path):
    train(smoke_config("ddpm"), tmp_path)
    metrics = (tmp_path / "metrics.jsonl").read_text()
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    losses = json.loads((tmp_path / "run.json").read_text())["last_losses"]
    assert train(smoke_config("ddpm"), tmp_path)["step"] == 20
    assert json.loads((tmp_path / "run.json").read_text())["last_losses"] == losses
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ckpts
