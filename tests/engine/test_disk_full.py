"""A save that runs out of space on a real (small) tmpfs: one line, nothing half-written,
run.json says failed, and the run resumes once there is room."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from hpcgen.engine.checkpoint import CheckpointManager, NoSpaceError, verify
from hpcgen.engine.disk import parse_quota
from hpcgen.engine.loop import train
from hpcgen.engine.run_record import last_metrics, read_metrics, read_run
from hpcgen.status import sweep_status
from tests.conftest import REPO, start_train_ranks
from tests.engine.test_train_cpu import smoke_config

# the tmpfs sizes below are those of ZeRO-2's files (3.8 MB a checkpoint; one rank's stage 0
# writes 2.9 MB), so these runs keep ZeRO-2 on one rank
ARGS = ["experiment=smoke", "trainer.max_steps=20", "trainer.ckpt_every_steps=5",
        "deepspeed.unsharded_at_one_rank=false"]  # fmt: skip


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


def fill_when_logged(run, step: int, filler) -> threading.Thread:
    """Once metrics.jsonl reaches `step`, fill the filesystem up (another job's output)."""

    def fill() -> None:
        while last_metrics(run).get("step", 0) < step:
            time.sleep(0.005)
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass  # full

    thread = threading.Thread(target=fill, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_disk_that_fills_up_between_saves_is_one_error_and_the_run_resumes(tmpfs, capsys):
    resize(tmpfs, "16m")
    run, args = tmpfs / "run", [*ARGS, "trainer.max_steps=1000", "trainer.log_every_steps=1"]
    filler = fill_when_logged(run, 7, tmpfs / "someone-elses-file")
    with pytest.raises(NoSpaceError, match="no space left writing ") as err:
        train(smoke_config("ddpm", *args), run)
    filler.join()
    assert "step_00000005 is intact and a resume starts there" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    (tmpfs / "someone-elses-file").unlink()
    assert sweep_status(run)["jobs"][0]["state"] in ("FAILED", "DIED")  # not RUNNING
    assert train(smoke_config("ddpm", *ARGS), run)["step"] == 20
    assert [r["step"] for r in read_metrics(run)][-1] == 20


@pytest.mark.slow
def test_a_full_disk_on_one_rank_ends_every_rank_with_the_disk_full_line(tmp_path):
    """Rank 1's checkpoint files land on a full filesystem and rank 0's do not (rank 1 runs in
    its own mount namespace with a 64 KiB tmpfs over the run's checkpoints/, as a node whose
    mount is full or a full Lustre OST looks): rank 0 must not wait in the collective save."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a mount namespace here (unshare -m needs root)")
    mount = 'mount -t tmpfs -o size=64k tmpfs "$0" && exec "$@"'
    wrap = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        mount,
        str(run / "checkpoints"),
    ]
    args = ["experiment=smoke", "trainer.global_batch=8", "trainer.max_steps=20",
            "trainer.ckpt_every_steps=5", "trainer.peer_timeout_s=60",
            f"hydra.run.dir={run}"]  # fmt: skip
    ranks = start_train_ranks(2, args, wrap={1: wrap})
    ended: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 400
        while len(ended) < 2 and time.monotonic() < deadline:
            ended.update({r: time.monotonic() for r, p in enumerate(ranks)
                          if r not in ended and p.poll() is not None})  # fmt: skip
            time.sleep(0.05)
    finally:
        for p in ranks:
            p.kill()
            p.wait()
    errs = [p.stderr.read() for p in ranks]
    assert len(ended) == 2, f"still waiting: {set(range(2)) - set(ended)}; {errs[0][-2000:]}"
    lines = []
    for rank, p in enumerate(ranks):
        assert p.returncode == 1 and "Traceback" not in errs[rank], errs[rank][-3000:]
        (line,) = [x for x in errs[rank].splitlines() if "hpcgen: error" in x]
        assert f"no space to save checkpoint step_00000005 in {run / 'checkpoints'}" in line
        lines.append(line)
    assert f"rank 1 on node {os.uname().nodename} (pid {ranks[1].pid}): no space" in lines[0]
    assert "no checkpoint was committed yet, so a resume starts from step 0" in lines[0]
    apart_s = abs(ended[0] - ended[1])
    assert apart_s < 10, apart_s  # not when SLURM's time limit comes
    record = read_run(run)
    assert record["status"] == "failed" and record["error"].startswith("NoSpaceError: rank 1")
    assert not list((run / "checkpoints").glob(".tmp-*"))  # rank 0's part removed
    print(f"rank 0 ended {ended[0] - ended[1]:+.2f}s after rank 1: {lines[0]}")


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
