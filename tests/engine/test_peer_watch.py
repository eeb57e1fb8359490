"""A stopped rank ends a multi-rank job within HPCGEN_PEER_TIMEOUT_S, naming rank and node.

Two ranks on the loopback (gloo), as torchrun starts them, all-reducing in a loop; one of them
gets SIGSTOP, as a hung process or a wedged host would look. The 2-node version of this runs
on the namespace cluster in tests/test_multinode.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hpcgen.engine.distributed import free_port, loopback_rank_env
from hpcgen.engine.peer_watch import EXIT_CODE, peer_timeout_s
from tests.conftest import REPO

pytestmark = pytest.mark.slow
TIMEOUT_S = 3


def _start(mode: str) -> list[subprocess.Popen]:
    port, procs = free_port(), []
    for rank in range(2):
        env = {**loopback_rank_env(rank, 2, port), "HPCGEN_PEER_TIMEOUT_S": str(TIMEOUT_S),
               "OMP_NUM_THREADS": "1"}  # fmt: skip
        cmd = [sys.executable, "-m", "tests.engine.peer_watch_worker", mode]
        procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    for p in procs:  # both inside the training loop
        while (line := p.stdout.readline()) and line.strip() != "ready":
            pass
        assert line, p.stderr.read()[-3000:]
    return procs


@pytest.mark.parametrize("stopped", [1, 0], ids=["rank1-stopped", "rank0-stopped"])
def test_a_stopped_rank_ends_the_job_within_the_peer_timeout(stopped):
    procs = _start("collectives")
    try:
        os.kill(procs[stopped].pid, signal.SIGSTOP)
        hit, other = time.monotonic(), procs[1 - stopped]
        assert other.wait(timeout=60) == EXIT_CODE
        ended_s = time.monotonic() - hit
        err = other.stderr.read()
    finally:
        for p in procs:
            p.kill()
            p.wait()
    node = "127.0.0.1" if stopped == 0 else os.uname().nodename  # rank 0: the rendezvous host
    assert f"rank {stopped} on node {node} stopped answering" in err, err[-2000:]
    assert TIMEOUT_S <= ended_s < TIMEOUT_S + 5, ended_s


def test_a_rank_that_ends_cleanly_is_not_taken_for_a_hung_one():
    procs = _start("finish-early")  # rank 1 ends at once, rank 0 goes on for 4 timeouts
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err[-2000:]  # a false alarm exits with EXIT_CODE


def test_a_bad_peer_timeout_is_named(monkeypatch):
    monkeypatch.setenv("HPCGEN_PEER_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="HPCGEN_PEER_TIMEOUT_S='soon'"):
        peer_timeout_s()
