"""Many hosts for real: a 2-node SLURM cluster whose nodes are network namespaces of this machine.

`slurm/local-cluster.sh start --nodes 2` runs beside the 1-node cluster (its own controller,
reached through SLURM_CONF): ranks on hpcgen-node1 and hpcgen-node2 meet over the bridge, each
node with one core. The 1-node cluster stays up for the other tests and gives the reference
runs of 1 node x 2 tasks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hpcgen import slurm
from hpcgen.engine.run_record import read_run
from tests.conftest import REPO, run_train
from tests.test_slurm import _equal, _last_step, _SweepWatch

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
CLUSTER = REPO / "slurm" / "local-cluster.sh"
MULTI_CONF = Path(os.environ.get("HPCGEN_SLURM_STATE", "/var/tmp/hpcgen-slurm") + "-multi")
PEER_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def two_nodes(slurm_cluster):
    """The 2-node cluster for this module's tests, stopped (namespaces removed) at its end."""
    if os.geteuid() != 0:
        pytest.skip("the namespace nodes need root")
    started = subprocess.run(
        [str(CLUSTER), "start", "--nodes", "2"], capture_output=True, text=True, timeout=180
    )
    if started.returncode != 0:
        why = (started.stdout + started.stderr)[-2000:]
        if os.environ.get("HPCGEN_REQUIRE_SLURM") == "1":
            pytest.fail(f"HPCGEN_REQUIRE_SLURM=1 but the 2-node cluster did not start:\n{why}")
        pytest.skip(f"the 2-node cluster did not start:\n{why}")
    yield str(MULTI_CONF / "slurm.conf")
    subprocess.run([str(CLUSTER), "stop", "--nodes", "2"], capture_output=True, timeout=180)


@pytest.fixture
def on_two_nodes(two_nodes, monkeypatch):
    """sbatch, squeue and the launcher of this test talk to the 2-node cluster."""
    monkeypatch.setenv("SLURM_CONF", two_nodes)
    return two_nodes


def _train(sweep: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    args = [sys.executable, str(REPO / "launch" / "train.py"), "-m", "hydra/launcher=slurm",
            "experiment=smoke", f"hydra.sweep.dir={sweep}", *overrides]  # fmt: skip
    sweep.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run(args, cwd=sweep.parent, capture_output=True, text=True, timeout=timeout)


def _start_sweep(tmp_path: Path, sweep: Path, *overrides: str):
    """launch/train.py -m experiment=smoke on the SLURM launcher, in the background, its output
    in a file (a full pipe would stall it): (the launcher's process, the log's path)."""
    args = [sys.executable, str(REPO / "launch" / "train.py"), "-m", "hydra/launcher=slurm",
            "experiment=smoke", f"hydra.sweep.dir={sweep}", *overrides]  # fmt: skip
    log = tmp_path / "launcher.log"
    with open(log, "w") as out:
        launcher = subprocess.Popen(args, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    return launcher, log


def _final_states(run: Path, steps: int) -> dict[str, object]:
    """Every file of the last checkpoint: DeepSpeed's engines and hpcgen's per-rank state."""
    ckpt = run / "checkpoints" / f"step_{steps:08d}"
    states = {
        str(p.relative_to(ckpt)): torch.load(p, weights_only=False) for p in ckpt.rglob("*.pt")
    }
    for name, state in states.items():
        if name.endswith("optim_states.pt") and state["optimizer_state_dict"]["zero_stage"] == 3:
            _drop_zero3_padding(state, ckpt / name)
    return states


def _drop_zero3_padding(state: dict, path: Path) -> None:
    """ZeRO-3 splits every parameter into world-size parts of ceil(numel / world) elements and
    pads the last parts with torch.empty: whatever the allocator left there (e.g. 4.57e-41
    against 4.58e-41, or 2.9e23 against 0), not a weight. A rank's flat fp32 group is its
    parts of each parameter in turn; keep only the real elements."""
    rank = int(path.name.split("_")[3])  # zero_pp_rank_R_mp_rank_00_optim_states.pt
    world = len(list(path.parent.glob("zero_pp_rank_*_optim_states.pt")))
    shapes = torch.load(path.parent / "zero_pp_rank_0_mp_rank_00_model_states.pt",
                        weights_only=False)["param_shapes"]  # fmt: skip
    groups = state["optimizer_state_dict"]["fp32_flat_groups"]
    for i, (flat, group) in enumerate(zip(groups, shapes, strict=True)):
        kept, start = [], 0
        for shape in group.values():
            numel = torch.Size(shape).numel()
            part = -(-numel // world)
            kept.append(flat[start : start + max(0, min(part, numel - rank * part))])
            start += part
        assert start == flat.numel(), f"{path}: {flat.numel()} elements, the parts make {start}"
        groups[i] = torch.cat(kept)


def _logs(sweep: Path) -> str:
    return "".join(p.read_text() for p in sorted(sweep.glob(".submitit/*/*_log.*")))


def test_each_node_has_its_own_address_and_hostname_and_no_way_off_the_machine(on_two_nodes):
    status = subprocess.run([str(CLUSTER), "status", "--nodes", "2"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert status.returncode == 0 and "hpcgen-node2 idle" in status.stdout, status.stdout
    probe = (
        'echo "$(hostname) $(ip -4 -o addr show eth0 | cut -d" " -f7)'
        ' $(getent hosts hpcgen-node1 hpcgen-node2 | xargs) routes: $(ip route | xargs)"'
    )
    out = subprocess.run(["srun", "-N2", "-n2", "bash", "-c", probe], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = sorted(out.stdout.splitlines())
    resolved = "169.254.77.11 hpcgen-node1 169.254.77.12 hpcgen-node2"
    for i, line in enumerate(lines, start=1):
        assert line.startswith(f"hpcgen-node{i} 169.254.77.{10 + i}/24 {resolved}"), line
        assert line.endswith(f"routes: 169.254.77.0/24 dev eth0 proto kernel scope link src "
                             f"169.254.77.{10 + i}"), line  # fmt: skip  # no default route
    assert len(lines) == 2


# ZeRO-1 (DDPM) matched bitwise too when run by hand; left out to keep the suite short.
SWEEPS = {"zero2": ["model=ddpm,gan"], "zero3": ["model=ddpm,gan", "deepspeed=zero3"]}


def test_two_nodes_x_one_task_end_with_the_weights_of_one_node_x_two_tasks(
    on_two_nodes, tmp_path, monkeypatch
):
    """Same global batch, seeds and data; only the hosts differ. Both models, ZeRO-2 and 3."""
    steps, layouts = 30, {"two-nodes": "hydra.launcher.nodes=2",
                          "one-node": "hydra.launcher.tasks_per_node=2"}  # fmt: skip
    for side, layout in layouts.items():
        started = time.monotonic()
        for name, grid in SWEEPS.items():
            done = _train(tmp_path / side / name, *grid, f"trainer.max_steps={steps}", layout)
            assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        print(f"{side}: 4 jobs in {time.monotonic() - started:.1f} s")
        # then the 1-node cluster: one node, 2 tasks of one CPU each
        monkeypatch.delenv("SLURM_CONF", raising=False)
    for name in SWEEPS:
        logs = _logs(tmp_path / "two-nodes" / name)
        assert "rank 1 on hpcgen-node2: GLOO_SOCKET_IFNAME=eth0 (169.254.77.12" in logs
        for job in range(len(list((tmp_path / "one-node" / name).glob("[0-9]")))):
            a, b = (tmp_path / side / name / str(job) for side in layouts)
            assert read_run(a)["world_size"] == read_run(b)["world_size"] == 2
            ref, got = _final_states(b, steps), _final_states(a, steps)
            assert ref.keys() == got.keys() and len(ref) >= 3, sorted(ref)
            for file in ref:
                assert _equal(ref[file], got[file]), f"{name} job {job}: {file} differs"


def _rank_pid(node: str, job_id: str, rank: int) -> int:
    """The training process of `rank` (its DataLoader workers share its environment)."""
    found = []
    pids = subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True).stdout
    for pid in pids.split():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if f"SLURM_PROCID={rank}".encode() in env and f"SLURM_JOB_ID={job_id}".encode() in env:
            if b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append((int(pid), ppid))
    top = [pid for pid, ppid in found if ppid not in {p for p, _ in found}]
    assert len(top) == 1, f"rank {rank} of job {job_id} on {node}: {found}"
    return top[0]


@pytest.mark.parametrize("fault", ["SIGSTOP", "SIGKILL"])
def test_a_rank_lost_on_node2_ends_the_job_in_bounded_time_and_a_rerun_resumes(
    on_two_nodes, tmp_path, fault
):
    """SIGSTOP (a hung rank: the peer watch ends the job) or SIGKILL (srun does) to rank 1 on
    node 2; then the same command resumes from the last committed checkpoint. After the SIGKILL
    node 2 is taken down for good and the job resumes on node 1 alone, at world size 1."""
    sweep, steps = tmp_path / "sweep", 300
    command = ["model=ddpm", "hydra.launcher.nodes=2", f"trainer.max_steps={steps}",
               "trainer.global_batch=16", "trainer.log_every_steps=1",
               "trainer.ckpt_every_steps=25",
               f"trainer.peer_timeout_s={PEER_TIMEOUT_S}"]  # fmt: skip
    launcher, log = _start_sweep(tmp_path, sweep, *command)
    run, watch = sweep / "0", _SweepWatch(sweep, launcher, log)
    try:
        watch.until(lambda: _last_step(run) >= 60, "the job to pass step 60")
        job = read_run(run)["slurm_job_id"]
        pid = _rank_pid("hpcgen-node2", job, 1)
        os.kill(pid, getattr(signal, fault))
        hit = time.monotonic()
        watch.until(lambda: slurm.job_state(job) not in slurm.ACTIVE_STATES,
                    "the job to end after its rank 1 was lost", launcher_may_end=True)  # fmt: skip
        ended_s = time.monotonic() - hit
        launcher.wait(timeout=120)
    finally:
        watch.cancel()
    step_at_fault = _last_step(run)
    print(f"{fault} to rank 1 on hpcgen-node2: job ended {ended_s:.1f} s later")
    assert launcher.returncode != 0 and slurm.job_state(job) == "FAILED"
    assert step_at_fault < steps, "the job must have been stopped before its end"
    assert ended_s < PEER_TIMEOUT_S + 30, f"{ended_s:.0f} s from the {fault} to the job's end"
    logs = _logs(sweep)
    if fault == "SIGKILL":  # srun sees the exit (SLURM_KILL_BAD_EXIT=1) and names the node
        assert "hpcgen-node2: task 1: Killed" in logs + log.read_text(), logs[-3000:]
    else:
        assert "rank 1 on node hpcgen-node2 stopped answering" in logs, logs[-3000:]
    committed = (run / "checkpoints" / "latest").read_text().strip()
    rerun, gone = command, fault == "SIGKILL"
    if gone:  # node 2 is gone for good (its slurmd stopped): the same command on node 1 alone
        os.kill(int((MULTI_CONF / "slurmd-hpcgen-node2.pid").read_text()), signal.SIGTERM)
        down = ["scontrol", "update", "nodename=hpcgen-node2", "state=down", "reason=gone"]
        subprocess.run(down, check=True)
        rerun = [arg.replace("nodes=2", "nodes=1") for arg in command]
    try:
        again = _train(sweep, *rerun)
    finally:
        if gone:  # its slurmd back, the node idle again, for the tests after this one
            back = subprocess.run([str(CLUSTER), "start", "--nodes", "2"], capture_output=True,
                                  text=True, timeout=180)  # fmt: skip
            assert back.returncode == 0, back.stdout + back.stderr
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    record = read_run(run)
    assert record["status"] == "completed" and record["step"] == steps
    assert [e["event"] for e in record["events"]][-2:] == ["resumed", "completed"]
    resumed = record["events"][-2]
    assert resumed["checkpoint"] == committed, "nothing committed is lost"
    if gone:  # through DeepSpeed's universal checkpoint, as on one host
        assert (resumed["world_size"], resumed["from_world_size"]) == (1, 2)


def test_a_preempted_two_node_job_requeues_and_matches_the_uninterrupted_one(
    on_two_nodes, tmp_path
):
    """Job 1 of the array gets SIGUSR2 and then `scontrol requeue`; job 0 runs through."""
    sweep, steps = tmp_path / "sweep", 200
    launcher, log = _start_sweep(
        tmp_path, sweep, "model=ddpm", "hydra.launcher.nodes=2", f"trainer.max_steps={steps}",
        "trainer.log_every_steps=1", "trainer.ckpt_every_steps=50", "trainer.keep_last_ckpts=3,4",
    )  # fmt: skip
    run, watch = sweep / "1", _SweepWatch(sweep, launcher, log)
    preemptions = [(40, "usr2"), (120, "requeue")]
    try:
        for target, how in preemptions:
            watch.until(lambda t=target: _last_step(run) >= t, f"job 1 to reach step {target}")
            job = read_run(run)["slurm_job_id"]
            usr2 = ["scancel", "--signal=USR2", job]
            cmd = usr2 if how == "usr2" else ["scontrol", "requeue", job]
            subprocess.run(cmd, check=True)
            watch.until(lambda: read_run(run)["status"] == "preempted", f"job 1 to stop ({how})")
        watch.until(lambda: launcher.poll() is not None, "the launcher", launcher_may_end=True)
    finally:
        watch.cancel()
    assert launcher.returncode == 0, log.read_text()[-4000:]
    record = read_run(run)
    assert record["status"] == "completed" and record["preemptions"] == len(preemptions)
    ref, got = _final_states(sweep / "0", steps), _final_states(run, steps)
    assert ref.keys() == got.keys()
    for name in ref:
        assert _equal(ref[name], got[name]), f"{name} differs after preemptions on 2 nodes"


EVAL_SMALL = ["eval.extractor=tiny-test", "eval.num_samples=32", "eval.ref_samples=128",
              "eval.kid_subsets=5", "eval.kid_subset_size=32"]  # fmt: skip
EVAL_SAME = ("step", "fid", "kid_mean", "kid_std", "num_samples", "ref_samples",
             "interpolation_smoothness")  # fmt: skip


def test_the_evaluation_array_spreads_over_both_nodes_and_matches_one_node(
    on_two_nodes, tmp_path, monkeypatch
):
    sweep = tmp_path / "sweep"  # trained here, locally: 2 checkpoints, 2 array tasks
    trained = run_train(["-m", "model=gan", "experiment=smoke", f"hydra.sweep.dir={sweep}"],
                        cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    results = {}
    for side in ("two-nodes", "one-node"):
        evaluate = [sys.executable, str(REPO / "launch" / "evaluate.py"), f"run={sweep}",
                    "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / side}", "force=true",
                    *EVAL_SMALL]  # fmt: skip
        done = subprocess.run(evaluate, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        results[side] = {
            p.name: {k: json.loads(p.read_text())[k] for k in EVAL_SAME}
            for p in sorted((sweep / "0" / "eval").glob("step_*.json"))
        }
        monkeypatch.delenv("SLURM_CONF", raising=False)  # then the 1-node cluster
    hosts = set(re.findall(r"hostname=(hpcgen-node\d)", _logs(tmp_path / "two-nodes")))
    assert hosts == {"hpcgen-node1", "hpcgen-node2"}, "one task on each node"
    assert len(results["one-node"]) == 2 and results["two-nodes"] == results["one-node"]


def test_refused_namespaces_stop_start_with_a_clear_message(tmp_path):
    """A user namespace's root may not make bridges or namespaces, as in an unprivileged
    container: start says so and what still works, and leaves nothing behind."""
    env = {**os.environ, "HPCGEN_SLURM_STATE": str(tmp_path / "state")}
    refused = subprocess.run(["unshare", "--user", "--map-root-user", str(CLUSTER), "start",
                              "--nodes", "2"], capture_output=True, text=True, env=env,
                             timeout=60)  # fmt: skip
    assert refused.returncode == 1
    assert "the kernel refused" in refused.stderr and "1-node cluster" in refused.stderr
    assert not list((tmp_path / "state-multi").glob("*")), "a refused start leaves nothing"


def test_a_cold_start_clears_jobs_that_died_with_the_daemons(on_two_nodes):
    """A machine rebooted (or imaged) mid-job: the saved state still lists the job as running.
    Recovered, it would hold both nodes as 'alloc' for minutes; a cold start drops it."""
    held = subprocess.run(["sbatch", "-N2", "--parsable", "--wrap", "sleep 600"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert held.returncode == 0, held.stderr
    for _ in range(120):
        squeue = subprocess.run(["squeue", "-h", "-j", held.stdout.strip(), "-o", "%t"],
                                capture_output=True, text=True, timeout=30)  # fmt: skip
        if squeue.stdout.strip() == "R":
            break
        time.sleep(0.5)
    assert squeue.stdout.strip() == "R", squeue.stdout + squeue.stderr
    # the nodes die with everything on them (slurmd, slurmstepd, the job), then the controller
    on_nodes = [int(pid) for node in ("hpcgen-node1", "hpcgen-node2") for pid in
                subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True,
                               timeout=30).stdout.split()]  # fmt: skip
    assert len(on_nodes) >= 4, "a slurmd and the job's slurmstepd on each node"
    for pid in [*on_nodes, int((MULTI_CONF / "slurmctld.pid").read_text())]:
        os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    again = subprocess.run([str(CLUSTER), "start", "--nodes", "2"], capture_output=True,
                           text=True, timeout=180)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "clearing the job state left by a cluster that is no longer running" in again.stdout
    status = subprocess.run([str(CLUSTER), "status", "--nodes", "2"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    for node in ("hpcgen-node1", "hpcgen-node2"):
        assert f"{node} idle" in status.stdout, status.stdout
    queue = subprocess.run(["squeue", "-h"], capture_output=True, text=True, timeout=30)
    assert queue.stdout.strip() == "", queue.stdout


def test_stop_removes_the_namespaces_bridge_and_hosts_lines_and_may_run_twice(two_nodes):
    """Last in this module: the fixture's own stop afterwards is then the second one."""
    for _ in range(2):
        stop = subprocess.run([str(CLUSTER), "stop", "--nodes", "2"], capture_output=True,
                              text=True, timeout=180)  # fmt: skip
        assert stop.returncode == 0, stop.stderr
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert "hpcgen-node" not in netns
        links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
        assert "hpcgen-" not in links
        assert "hpcgen-node" not in Path("/etc/hosts").read_text()
    assert slurm.reachable()[0], "the 1-node cluster is untouched"
