"""A stopped rank ends a multi-rank job within trainer.peer_timeout_s, naming rank and node;
a killed one is named (rank, node, pid) by the peer whose collective it broke.

Two ranks on the loopback (gloo), as torchrun starts them, all-reducing in a loop; one of them
gets SIGSTOP, as a hung process or a wedged host would look, or SIGKILL, as the OOM killer
deals it. The 2-node version of the SIGSTOP case runs on the namespace cluster in
tests/test_multinode.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hpcgen.config import ConfigError, TrainerConfig
from hpcgen.engine.distributed import free_port, loopback_rank_env
from hpcgen.engine.lease import LEASE
from hpcgen.engine.manifest import verify
from hpcgen.engine.peer_watch import EXIT_CODE
from hpcgen.engine.run_record import last_metrics, read_run
from tests.conftest import REPO, start_train_ranks

pytestmark = pytest.mark.slow
TIMEOUT_S = 3


def _start(mode: str) -> list[subprocess.Popen]:
    port, procs = free_port(), []
    for rank in range(2):
        env = {**loopback_rank_env(rank, 2, port), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "tests.engine.peer_watch_worker", mode, str(TIMEOUT_S)]
        procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    for p in procs:  # both inside the training loop
        while (line := p.stdout.readline()) and line.strip() != "ready":
            pass
        assert line, p.stderr.read()[-3000:]
    return procs


def _hit(victim: int, sig: int, settle_s: float = 0.0) -> tuple[int, float, str, int]:
    """Two ranks in collectives, `sig` to one: (the other's exit code, seconds from the signal
    to its end, its stderr, the victim's pid)."""
    procs = _start("collectives")
    try:
        time.sleep(settle_s)
        os.kill(procs[victim].pid, sig)
        hit, other = time.monotonic(), procs[1 - victim]
        code = other.wait(timeout=60)
        return code, time.monotonic() - hit, other.stderr.read(), procs[victim].pid
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.parametrize("stopped", [1, 0], ids=["rank1-stopped", "rank0-stopped"])
def test_a_stopped_rank_ends_the_job_within_the_peer_timeout(stopped):
    code, ended_s, err, _ = _hit(stopped, signal.SIGSTOP)
    assert code == EXIT_CODE, err[-2000:]
    node = "127.0.0.1" if stopped == 0 else os.uname().nodename  # rank 0: the rendezvous host
    assert f"rank {stopped} on node {node} stopped answering" in err, err[-2000:]
    assert TIMEOUT_S <= ended_s < TIMEOUT_S + 5, ended_s


@pytest.mark.parametrize("killed", [1, 0], ids=["rank1-killed", "rank0-killed"])
def test_a_rank_killed_inside_collectives_is_named_by_its_peer(killed):
    # after a few heartbeats, when the peers know each other's process
    code, ended_s, err, pid = _hit(killed, signal.SIGKILL, settle_s=1.0)
    assert code == EXIT_CODE, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("hpcgen: error: ")]
    what = "was killed (its process is gone" if killed else "is gone, and the rendezvous store"
    where = f"rank {killed} on node {os.uname().nodename} (pid {pid}) {what}"
    assert line.startswith(f"hpcgen: error: {where}"), err[-2000:]
    assert f"Rank {1 - killed} on {os.uname().nodename} ends the job now" in line
    assert "Traceback" not in err, err[-2000:]
    assert ended_s < 5, ended_s  # gloo notices at once; the pid or the store says who
    print(f"rank {1 - killed} ended {ended_s:.2f}s after the kill")


def test_a_rank_killed_while_training_ends_the_job_in_one_line_naming_it(tmp_path):
    run, host = tmp_path / "run", os.uname().nodename
    args = [
        "experiment=smoke",
        "trainer.global_batch=8",
        "trainer.max_steps=100000",
        "trainer.log_every_steps=1",
        "trainer.ckpt_every_steps=5",
        "trainer.peer_timeout_s=30",
        f"hydra.run.dir={run}",
    ]
    ranks = start_train_ranks(2, args)
    try:
        deadline = time.monotonic() + 300
        while last_metrics(run).get("step", 0) < 7:  # past a committed checkpoint
            assert all(p.poll() is None for p in ranks), ranks[0].communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(ranks[1].pid, signal.SIGKILL)  # the OOM killer's way: no handler runs
        hit = time.monotonic()
        code = ranks[0].wait(timeout=120)
        ended_s, err = time.monotonic() - hit, ranks[0].stderr.read()
    finally:
        for p in ranks:
            p.kill()
            p.wait()
    assert code == EXIT_CODE, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if "hpcgen: error" in x]
    assert f"rank 1 on node {host} (pid {ranks[1].pid}) was killed" in line, line
    assert f"Rank 0 on {host} ends the job now" in line and "resume" in line
    record = read_run(run)
    assert record["status"] == "failed", record
    assert record["error"].startswith(f"PeerLost: rank 1 on node {host} (pid {ranks[1].pid})")
    assert not (run / LEASE).exists()  # released: the resume is not refused
    verify(run / "checkpoints" / "step_00000005", world_size=2, hashes=True)
    assert ended_s < 10, ended_s
    print(f"rank 0 ended {ended_s:.2f}s after rank 1's SIGKILL: {line}")


def test_a_rank_that_ends_cleanly_is_not_taken_for_a_hung_one():
    procs = _start("finish-early")  # rank 1 ends at once, rank 0 goes on for 4 timeouts
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err[-2000:]  # a false alarm exits with EXIT_CODE


def test_a_bad_peer_timeout_is_named():
    with pytest.raises(ConfigError, match=r"trainer.peer_timeout_s=0 is not valid: it must be > 0"):
        TrainerConfig(peer_timeout_s=0)
