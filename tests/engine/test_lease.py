"""A second launch into a live run directory is refused; a dead holder never blocks a resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hpcgen.engine.distributed import free_port, loopback_rank_env
from hpcgen.engine.lease import (
    LEASE,
    RunBusyError,
    RunLease,
    check_free,
    holder_alive,
    read_lease,
)
from hpcgen.engine.run_record import last_metrics, read_metrics, read_run
from hpcgen.status import sweep_status
from tests.conftest import REPO

TRAIN = [sys.executable, str(REPO / "launch" / "train.py")]


@contextmanager
def holder(run_dir, step: int, *extra: str) -> Iterator[subprocess.Popen]:
    """launch/train.py training in `run_dir` past `step`; SIGKILLed on exit (no clean exit:
    its lease stays behind, as after the OOM killer or a lost node)."""
    args = ["experiment=smoke", "trainer.max_steps=100000", "trainer.log_every_steps=1",
            "trainer.ckpt_every_steps=5", f"hydra.run.dir={run_dir}", *extra]  # fmt: skip
    proc = subprocess.Popen([*TRAIN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while last_metrics(run_dir).get("step", 0) < step:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.02)
        yield proc
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)


@pytest.mark.slow
def test_a_second_launch_is_refused_naming_the_holder_and_a_killed_holder_is_taken_over(tmp_path):
    run = tmp_path / "run"
    with holder(run, 3) as first:
        # the holder's own atomic writes (.run.json.tmp) come and go: not files of the run
        files = [p for p in run.rglob("*") if p.is_file() and not p.name.endswith(".tmp")]
        before = {p: p.stat().st_mtime_ns for p in files}
        started = time.monotonic()
        second = subprocess.run([*TRAIN, "experiment=smoke", "trainer.max_steps=12",
                                 f"hydra.run.dir={run}"], capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        refused_s = time.monotonic() - started
        assert second.returncode == 2, second.stderr[-3000:]
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith(f"hpcgen: error: {run} is in use by pid {first.pid} on ")
        assert socket.gethostname() in line and "its process runs on this host" in line
        assert f"kill {first.pid}" in line and "run this command again to resume" in line
        touched = [p for p in before if p.stat().st_mtime_ns != before[p]]
        assert set(touched) <= {run / "metrics.jsonl", run / "run.json", run / LEASE} | {
            p for p in before if "checkpoints" in p.parts or "samples" in p.parts
        }, touched  # only the first job's own progress; not .hydra/, not train.log
        assert (run / ".hydra" / "overrides.yaml").read_text().count("100000") == 1
        print(f"refused in {refused_s:.1f}s")
    assert read_lease(run)["pid"] == first.pid
    shown = sweep_status(run)  # what launch/status.py prints: not RUNNING, and how to resume
    assert shown["jobs"][0]["state"] == "DIED" and shown["next"][0].startswith("resume")
    end = last_metrics(run)["step"] + 3  # past what the killed job reached
    resumed = subprocess.run([*TRAIN, "experiment=smoke", f"trainer.max_steps={end}",
                              "trainer.log_every_steps=1", "trainer.ckpt_every_steps=5",
                              f"hydra.run.dir={run}"], capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"taking over {run} from pid {first.pid}" in resumed.stdout
    assert "its process is gone from this host" in resumed.stdout
    assert [r["step"] for r in read_metrics(run)] == list(range(1, end + 1))
    assert [e["event"] for e in read_run(run)["events"]] == ["started", "resumed", "completed"]
    assert not (run / LEASE).exists()  # released at the end


@pytest.mark.slow
def test_the_job_itself_refuses_a_held_run_dir_on_every_rank_before_writing(tmp_path):
    """The check inside train(), what a job that passed preflight meets on its node: rank 0
    is refused, rank 1 hears it at once instead of waiting in the first collective."""
    run = tmp_path / "run"
    with holder(run, 2) as first:
        code = (
            "from pathlib import Path; from hpcgen.engine.loop import train; "
            "from tests.engine.test_train_cpu import smoke_config; "
            "train(smoke_config('ddpm', 'trainer.global_batch=16', 'trainer.max_steps=13', "
            f"'trainer.ckpt_every_steps=13'), Path({str(run)!r}))"
        )
        port, started = free_port(), time.monotonic()
        ranks = [
            subprocess.Popen(
                [sys.executable, "-c", code],
                env=loopback_rank_env(r, 2, port),
                cwd=REPO,
                stderr=subprocess.PIPE,
                text=True,
            )
            for r in (0, 1)
        ]
        errors = [p.communicate(timeout=300)[1] for p in ranks]
        assert all(p.returncode != 0 for p in ranks)
        assert f"RunBusyError: {run} is in use by pid {first.pid}" in errors[0]
        assert f"RunBusyError: rank 0 could not take {run}" in errors[1]
        print(f"both ranks out in {time.monotonic() - started:.1f}s")
        # step 13 is this job's only checkpoint; the holder saves every 5th step
        assert not (run / "checkpoints" / "step_00000013").exists()


def files_of(run_dir) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")
            if p.is_file() and p.name != LEASE}  # fmt: skip


@pytest.mark.slow
def test_a_holder_whose_lease_was_taken_over_stops_writing_and_names_the_new_holder(tmp_path):
    """A network partition, as the holder and a later launch each see it: the holder is
    stopped (it can neither renew nor write), the other host reads a lease that went stale
    and takes it over (the real takeover); then the holder runs on."""
    run, beat = tmp_path / "run", "trainer.lease_heartbeat_s=0.5"
    rare = ["trainer.ckpt_every_steps=100000", "trainer.sample_every_steps=100000"]
    with holder(run, 3, beat, *rare) as first:
        first.send_signal(signal.SIGSTOP)
        stale = {**read_lease(run), "host": "node-elsewhere", "heartbeat": time.time() - 60}
        (run / LEASE).write_text(json.dumps(stale))  # how it looks from the other host
        thief = RunLease(run, 0.5)
        thief.acquire()
        try:
            before, steps = files_of(run), [r["step"] for r in read_metrics(run)]
            first.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            code = first.wait(timeout=60)
            ended_s, err = time.monotonic() - resumed, first.stderr.read()
            assert read_lease(run)["token"] == thief.token  # not renewed over the new holder
        finally:
            thief.release()
    assert code == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if "hpcgen: error" in x]
    assert f"{run} was taken over by pid {os.getpid()} on {socket.gethostname()}" in line
    assert "writes nothing more there" in line
    # nothing written after the takeover but the step under way when the partition began
    after = [r["step"] for r in read_metrics(run)]
    assert after[: len(steps)] == steps and len(after) <= len(steps) + 1, (steps, after)
    changed = {p for p in files_of(run) if files_of(run).get(p) != before.get(p)}
    assert changed <= {run / "metrics.jsonl", run / "run.json"}, changed
    assert read_run(run)["status"] == "running"  # not the displaced job's to say
    assert ended_s < 10, ended_s
    print(f"the displaced holder ended {ended_s:.2f}s after it ran on: {line}")


def lease_of(host: str, age_s: float, job: str | None = None) -> dict:
    return {"host": host, "pid": 1, "pid_start": "0", "slurm_job_id": job, "token": "x",
            "started": time.time() - age_s, "heartbeat": time.time() - age_s,
            "heartbeat_s": 1.0}  # fmt: skip


def test_a_holder_on_another_host_lives_while_its_heartbeat_is_fresh(tmp_path):
    assert holder_alive(lease_of("node-elsewhere", 1.0), 1.0)[0]
    alive, how = holder_alive(lease_of("node-elsewhere", 10.0), 1.0)
    assert not alive and "last heartbeat was 10s ago (dead after 4s)" in how
    (tmp_path / LEASE).write_text(json.dumps(lease_of("node-elsewhere", 10.0)))
    check_free(tmp_path, 1.0)  # dead: no error
    (tmp_path / LEASE).write_text(json.dumps(lease_of("node-elsewhere", 0.0)))
    with pytest.raises(RunBusyError, match="in use by pid 1 on node-elsewhere"):
        check_free(tmp_path, 1.0)
    (tmp_path / LEASE).write_text('{"host": "node-elsewhere", "pi')  # cut by a crash
    check_free(tmp_path, 1.0)


def test_this_slurm_jobs_own_lease_is_an_earlier_attempt_and_another_step_must_beat(
    monkeypatch,
):
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    requeued = {**lease_of("node-elsewhere", 3600.0, "4242"), "slurm_step": "0"}
    alive, how = holder_alive(requeued, 1.0)
    assert not alive and how == "it was an earlier attempt of this SLURM job 4242"
    step = {**lease_of("node-elsewhere", 0.0, "4242"), "slurm_step": "1"}  # srun in salloc
    assert holder_alive(step, 1.0)[0]
    assert not holder_alive({**step, "heartbeat": time.time() - 10}, 1.0)[0]


@pytest.mark.slurm
def test_a_holder_with_a_slurm_job_lives_as_long_as_the_job(slurm_cluster, tmp_path):
    out = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 120"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    job = out.stdout.strip().split(";")[0]
    try:
        lease = lease_of("node-elsewhere", 3600.0, job)  # its heartbeat long stale
        deadline = time.monotonic() + 60
        while not holder_alive(lease, 1.0)[0] and time.monotonic() < deadline:
            time.sleep(0.5)
        alive, how = holder_alive(lease, 1.0)
        assert alive and how.startswith(f"SLURM job {job} is "), how  # PENDING, RUNNING, ...
    finally:
        subprocess.run(["scancel", job], check=True)
    deadline = time.monotonic() + 60
    while holder_alive(lease, 1.0)[0] and time.monotonic() < deadline:
        time.sleep(0.5)
    alive, how = holder_alive(lease, 1.0)
    assert not alive and how.startswith(f"SLURM job {job} is ")


@pytest.mark.slurm
def test_a_sweep_resume_names_its_slurm_jobs_still_in_the_queue(slurm_cluster, tmp_path):
    from hpcgen.cli.preflight import preflight

    out = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 120"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    job = out.stdout.strip().split(";")[0]
    sweep = tmp_path / "sweep"
    (sweep / ".submitit" / job).mkdir(parents=True)  # where submitit logs a job it submitted
    try:
        with pytest.raises(RunBusyError, match=f"still queued or running \\({job} "):
            preflight(["model=ddpm,gan", f"hydra.sweep.dir={sweep}"], multirun=True)
    finally:
        subprocess.run(["scancel", job], check=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            preflight(["model=ddpm,gan", f"hydra.sweep.dir={sweep}"], multirun=True)
            break
        except RunBusyError:
            time.sleep(0.5)
    else:
        pytest.fail(f"preflight still refuses {sweep} after scancel {job}")


def test_a_holder_killed_but_not_yet_reaped_is_dead_and_a_reused_pid_is_not_it():
    from hpcgen.engine.lease import me, process_start_time

    proc = subprocess.Popen(["sleep", "60"])
    try:
        lease = {**me(), "pid": proc.pid, "heartbeat": time.time(), "heartbeat_s": 30.0}
        lease["pid_start"] = process_start_time(proc.pid)
        assert holder_alive(lease, 30.0) == (True, "its process runs on this host")
        assert not holder_alive({**lease, "pid_start": "1"}, 30.0)[0]  # another process
        proc.send_signal(signal.SIGKILL)
        time.sleep(0.2)  # a zombie now: its /proc entry stays until it is reaped
        assert holder_alive(lease, 30.0) == (False, "its process is gone from this host")
    finally:
        proc.kill()
        proc.wait()
