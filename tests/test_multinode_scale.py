"""More hosts than this machine has cores: 4 namespace nodes of 2 declared CPUs each (8 on 2
cores: a simulation whose jobs share cores, right for how ranks meet, read and resume across
hosts, wrong for timing). 2 tasks per node, 8 ranks with 2 data workers each, fewer shards than
readers, a preemption; the data stream's own tallies show every sample read once per epoch.

Runs after tests/test_multinode.py, whose 2-node cluster it replaces for this module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from hpcgen.data.shards import shard_paths
from hpcgen.data.tally import dataset_tally, epoch_tally
from hpcgen.engine.run_record import read_run
from tests.test_multinode import (
    CLUSTER,
    MULTI_CONF,
    _final_states,
    _logs,
    _start_sweep,
    _train,
)
from tests.test_slurm import _equal, _last_step, _SweepWatch

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SHAPE = ["--nodes", "4", "--cpus-per-node", "2"]


@pytest.fixture(scope="module")
def four_nodes(slurm_cluster):
    if os.geteuid() != 0:
        pytest.skip("the namespace nodes need root")
    started = subprocess.run([str(CLUSTER), "start", *SHAPE], capture_output=True, text=True,
                             timeout=180)  # fmt: skip
    if started.returncode != 0:
        why = (started.stdout + started.stderr)[-2000:]
        if os.environ.get("HPCGEN_REQUIRE_SLURM") == "1":
            pytest.fail(f"HPCGEN_REQUIRE_SLURM=1 but the 4-node cluster did not start:\n{why}")
        pytest.skip(f"the 4-node cluster did not start:\n{why}")
    conf = str(MULTI_CONF / "slurm.conf")
    nodes = subprocess.run(["sinfo", "-N", "-h", "-o", "%N %c"], capture_output=True, text=True,
                           env={**os.environ, "SLURM_CONF": conf}, timeout=30).stdout  # fmt: skip
    assert sorted(nodes.split("\n")[:-1]) == [f"hpcgen-node{i} 2" for i in range(1, 5)], nodes
    yield conf
    subprocess.run([str(CLUSTER), "stop", "--nodes", "4"], capture_output=True, timeout=180)


@pytest.fixture
def on_four_nodes(four_nodes, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", four_nodes)
    return four_nodes


def _stream_states(run: Path, step: int) -> list[dict]:
    ckpt = run / "checkpoints" / f"step_{step:08d}"
    world = read_run(run)["world_size"]
    return [
        torch.load(ckpt / f"hpcgen_rank{r:05d}.pt", weights_only=False)["stream"]
        for r in range(world)
    ]


def _read_once(run: Path, step: int, epoch: int) -> tuple[int, int]:
    """(samples, digest) of `epoch` over every reader of every rank, asserted equal to the
    data set read straight from its shards."""
    root = Path(read_run(run)["data_root"])
    shards = shard_paths(root, json.loads((root / "manifest.json").read_text()))
    got, whole = epoch_tally(_stream_states(run, step), epoch), dataset_tally(shards)
    assert got == whole, f"{run}: epoch {epoch} read {got}, the data set is {whole}"
    return got


# 512 images in 8 shards of 64: 2 hosts x 2 ranks x 2 workers = 8 readers, a shard each; 4
# images a rank a step, so every reader ends its epoch 0 at step 32
DATA = ["data.num_samples=512", "data.num_workers=2", "trainer.global_batch=16"]


def test_two_hosts_x_two_ranks_x_two_workers_read_each_sample_once_and_match_four_hosts(
    on_four_nodes, tmp_path
):
    steps, layouts = 36, {"2x2": ["hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=2"],
                          "4x1": ["hydra.launcher.nodes=4"]}  # fmt: skip
    for side, layout in layouts.items():
        done = _train(tmp_path / side, "model=ddpm,gan", *DATA, f"trainer.max_steps={steps}",
                      "trainer.ckpt_every_steps=12", *layout)  # fmt: skip
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    for job_logs in sorted((tmp_path / "2x2" / ".submitit").glob("[0-9]*_[0-9]*")):  # task N_J
        hosts = _hostnames(job_logs)
        assert len(hosts) == 4 and len(set(hosts)) == 2, f"{job_logs.name}: {hosts}"
        assert all(hosts.count(h) == 2 for h in hosts), f"{job_logs.name}: 2 ranks a host"
    for job in ("0", "1"):  # ddpm, gan
        a, b = (tmp_path / side / job for side in layouts)
        assert read_run(a)["world_size"] == read_run(b)["world_size"] == 4
        count, _ = _read_once(a, steps, epoch=0)
        assert count == 512 and _read_once(b, steps, epoch=0)[0] == 512
        ref, got = _final_states(b, steps), _final_states(a, steps)
        assert ref.keys() == got.keys() and len(ref) >= 6, sorted(ref)
        for file in ref:
            assert _equal(ref[file], got[file]), f"job {job}: {file} differs between 2x2 and 4x1"


def _hostnames(job_logs: Path) -> list[str]:
    """The node of each rank of one job, from the rank layout lines of its tasks' logs."""
    text = "".join(p.read_text() for p in sorted(job_logs.glob("*_log.*")))
    return re.findall(r"rank \d+ on (hpcgen-node\d)", text)


def test_eight_ranks_on_four_hosts_with_fewer_shards_than_readers_preempt_and_resume(
    on_four_nodes, tmp_path
):
    """ZeRO-3, 8 ranks x 2 workers = 16 readers over 4 shards (each reader keeps every 16th
    sample). Job 1 of the array is preempted (SIGUSR2) and requeued; job 0 runs through; both
    end with the same bits, and every sample was read once in each finished epoch."""
    sweep, steps = tmp_path / "sweep", 40
    launcher, log = _start_sweep(
        tmp_path, sweep, "model=ddpm", "deepspeed=zero3", "hydra.launcher.nodes=4",
        "hydra.launcher.tasks_per_node=2", "data.num_workers=2", "trainer.global_batch=16",
        f"trainer.max_steps={steps}", "trainer.log_every_steps=1",
        "trainer.ckpt_every_steps=10", "trainer.keep_last_ckpts=3,4",
    )  # fmt: skip
    run, watch = sweep / "1", _SweepWatch(sweep, launcher, log)
    try:
        watch.until(lambda: _last_step(run) >= 14, "job 1 to reach step 14")
        job = read_run(run)["slurm_job_id"]
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        watch.until(lambda: read_run(run)["status"] == "preempted", "job 1 to stop")
        watch.until(lambda: launcher.poll() is not None, "the launcher", launcher_may_end=True)
    finally:
        watch.cancel()
    assert launcher.returncode == 0, log.read_text()[-4000:]
    record = read_run(run)
    assert record["status"] == "completed" and record["preemptions"] == 1, record
    assert record["world_size"] == 8 and record["zero_stage"] == 3
    assert "keeps every n-th sample" in _logs(sweep)  # 4 shards, 16 readers: warned
    # 2 images a rank a step: a reader's 16 samples take 8 of its turns, 16 steps an epoch
    for job_dir in (sweep / "0", run):
        assert _read_once(job_dir, steps, epoch=1)[0] == 256
    ref, got = _final_states(sweep / "0", steps), _final_states(run, steps)
    assert ref.keys() == got.keys() and len(ref) >= 16, sorted(ref)
    for name in ref:
        assert _equal(ref[name], got[name]), f"{name} differs after a preemption on 8 ranks"
