"""launch/status.py on real run directories: a dead sweep, its resume command, JSON output."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def status(path, *flags) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "status.py"), str(path), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_killed_sweep_shows_its_state_and_resumes_with_the_printed_command(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "model=ddpm,gan",
        "experiment=smoke",
        "trainer.max_steps=60",
        "trainer.log_every_steps=1",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "train.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = sweep / "0" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (
        not metrics.exists() or len(metrics.read_text().splitlines()) < 5
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # as `scancel` would: save, then stop the whole sweep
    proc.communicate(timeout=120)

    data = json.loads(status(sweep, "--json").stdout)
    assert set(data) == {"path", "jobs", "next"}
    (job,) = data["jobs"]  # job 1 never started
    assert job["state"] == "PREEMPTED" and job["preemptions"] == 1 and 5 <= job["step"] < 60
    assert job["overrides"] == [
        "model=ddpm",
        "experiment=smoke",
        "trainer.max_steps=60",
        "trainer.log_every_steps=1",
    ]
    assert job["latest_checkpoint"] == f"step_{job['step']:08d}"
    expected_keys = {
        "job",
        "run_dir",
        "overrides",
        "model",
        "slurm_job_id",
        "state",
        "status",
        "step",
        "max_steps",
        "kimg",
        "images_per_s",
        "losses",
        "peak_memory_gb",
        "latest_checkpoint",
        "preemptions",
        "best_fid",
        "evaluation",
        "skipped_samples",
        "wall_s",
        "log",
        "error",
    }
    assert set(job) == expected_keys
    hint, *others = data["next"]
    assert hint.startswith("resume the unfinished job(s): python launch/train.py -m")
    assert all(line.startswith("evaluate ") for line in others)  # checkpoints not yet evaluated

    table = status(sweep).stdout
    assert "PREEMPTED" in table and "model=ddpm experiment=smoke" in table and "next:" in table

    command = shlex.split(hint.split(": ", 1)[1])
    resumed = subprocess.run(
        [sys.executable, *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    data = json.loads(status(sweep, "--json").stdout)
    assert [(j["model"], j["state"], j["step"]) for j in data["jobs"]] == [
        ("ddpm", "COMPLETED", 60),
        ("gan", "COMPLETED", 60),
    ]
    (evaluate,) = data["next"]  # nothing to resume; the checkpoints await evaluation
    assert evaluate.startswith("evaluate ") and f"python launch/evaluate.py run={sweep}" in evaluate
    steps = [json.loads(line)["step"] for line in open(metrics)]
    assert steps == list(range(1, 61))


def test_status_of_a_directory_that_is_not_there_is_a_clear_error(tmp_path):
    result = status(tmp_path / "nope")
    assert result.returncode == 2 and "is not a directory" in result.stderr
