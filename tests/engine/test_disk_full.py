"""A save that runs out of space on a real (small) tmpfs: one line, nothing half-written,
run.json says failed, and the run resumes once there is room."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpcgen.engine.checkpoint import CheckpointManager, NoSpaceError, verify
from hpcgen.engine.disk import parse_quota
from hpcgen.engine.loop import train
from hpcgen.engine.run_record import read_metrics, read_run
from tests.conftest import REPO
from tests.engine.test_train_cpu import smoke_config

ARGS = ["experiment=smoke", "trainer.max_steps=20", "trainer.ckpt_every_steps=5"]


@pytest.fixture
def tmpfs(tmp_path):
    """A tmpfs of 6 MiB (one smoke DDPM checkpoint is 3.8 MB): mount -o remount resizes it."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def resize(mnt, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)


@pytest.mark.slow
def test_a_save_into_a_full_disk_is_one_line_and_the_run_resumes_after(tmpfs):
    run = tmpfs / "run"
    done = subprocess.run(
        [sys.executable, str(REPO / "launch" / "train.py"), *ARGS, f"hydra.run.dir={run}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "hpcgen: error" in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    (line,) = errors
    assert f"no space to save checkpoint step_00000010 in {run / 'checkpoints'}" in line
    assert "the size of step_00000005" in line and f"free on {tmpfs} when it began" in line
    assert "step_00000005 is intact and a resume starts there" in line
    assert "run the same command again to resume" in line
    assert "WARNING" in done.stdout and "two checkpoints need" in done.stdout  # before saving
    assert not list(run.rglob(".tmp-*")) and not list(run.glob(".*.tmp"))
    record = read_run(run)
    assert record["status"] == "failed" and record["error"].startswith("NoSpaceError: no space")
    assert [e["event"] for e in record["events"]] == ["started", "failed"]
    verify(run / "checkpoints" / "step_00000005", world_size=1, hashes=True)

    resize(tmpfs, "16m")  # room again (a freed disk, a raised quota)
    assert train(smoke_config("ddpm", *ARGS), run)["step"] == 20
    assert read_run(run)["status"] == "completed"
    assert [r["step"] for r in read_metrics(run)] == [5, 10, 15, 20]


@pytest.mark.slow
def test_a_first_save_without_room_says_the_run_restarts_from_step_0(tmpfs, capsys):
    resize(tmpfs, "2m")
    with pytest.raises(NoSpaceError, match="no checkpoint was committed yet") as err:
        train(smoke_config("ddpm", *ARGS), tmpfs / "run")
    assert "estimated from the parameter count" in str(err.value)
    assert "WARNING" in capsys.readouterr().out
    assert CheckpointManager(tmpfs / "run", 0, 1, 3).committed() == []
    assert not list((tmpfs / "run").rglob(".tmp-*"))
    assert read_run(tmpfs / "run")["status"] == "failed"


def test_quota_output_of_lfs_and_quota_gives_the_bytes_left():
    lfs = "      /lustre  1000*  0  3000  -  12  0  0  -\n"
    quota = (
        "Disk quotas for user ana (uid 1000):\n"
        "     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace\n"
        "nfs:/export/home  4096  8192  10240        7  0  0\n"
    )
    assert parse_quota(lfs) == 2000 * 1024
    assert parse_quota(quota) == (10240 - 4096) * 1024
    assert parse_quota("Disk quotas for user ana (uid 1000): none\n") is None
