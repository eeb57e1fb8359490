"""The SLURM path for real: Hydra multirun -> hydra-submitit-launcher -> the local cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hpcgen import slurm
from hpcgen.engine.run_dir import (
    COMMIT_MANIFEST,
    checkpoint_dir,
    latest_name,
    rank_state_file,
    result_paths,
)
from hpcgen.engine.run_record import last_metrics, read_run
from tests.conftest import REPO, compose_train, run_train

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_local_cluster_reports_its_daemons(slurm_cluster):
    status = subprocess.run(
        [str(REPO / "slurm" / "local-cluster.sh"), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if status.returncode != 0 and "not running" in status.stdout:
        pytest.skip("SLURM reachable, but not the cluster of slurm/local-cluster.sh")
    assert "slurmctld running" in status.stdout and "debug" in status.stdout


def test_multirun_on_slurm_completes_both_models(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(
        [
            "-m",
            "model=ddpm,gan",
            "hydra/launcher=slurm",
            "experiment=smoke",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Bypassing sacct error" not in output  # squeue-based watching when accounting is off
    job_ids = set()
    for job, model in ((0, "ddpm"), (1, "gan")):
        run = json.loads((sweep / str(job) / "run.json").read_text())
        assert run["model"] == model and run["status"] == "completed" and run["step"] == 20
        assert run["slurm_job_id"] and latest_name(checkpoint_dir(sweep / str(job)))
        assert (sweep / str(job) / "samples" / "step_00000020.png").is_file()
        assert slurm.job_state(run["slurm_job_id"]) == "COMPLETED"
        job_ids.add(run["slurm_job_id"].split("_")[0])
    assert len(job_ids) == 1, "both jobs must be tasks of one SLURM array"
    array_id = job_ids.pop()
    assert result.stdout.count("COMPLETED") == 2 and "hpcgen sweep" in result.stdout
    assert f"{array_id}_0" in result.stdout and f"{array_id}_1" in result.stdout


def test_two_ranks_on_one_node_train_under_zero2(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(
        [
            "-m",
            "model=ddpm",
            "hydra/launcher=slurm",
            "experiment=smoke",
            "hydra.launcher.tasks_per_node=2",
            "deepspeed=zero2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    run = json.loads((sweep / "0" / "run.json").read_text())
    assert run["world_size"] == 2 and run["status"] == "completed"
    assert run["global_batch"] == 2 * 8
    ckpt = sweep / "0" / "checkpoints" / "step_00000020"
    assert {p.name for p in ckpt.glob("hpcgen_rank*.pt")} == {
        rank_state_file(0),
        rank_state_file(1),
    }
    manifest = json.loads((ckpt / COMMIT_MANIFEST).read_text())
    assert manifest["world_size"] == 2


def _two_task_script(tmp_path, srun_line: str):
    """tmp_path/job.sh: two tasks of one CPU, output in tmp_path/job.out, and the slurm
    launcher's own `setup` lines before the srun line, as submitit writes them."""
    setup = compose_train(["hydra/launcher=slurm"]).hydra.launcher.setup
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n#SBATCH --ntasks=2\n#SBATCH --cpus-per-task=1\n"
        f"#SBATCH --output={tmp_path}/job.out\n"
        + "".join(f"{line}\n" for line in setup)
        + f"{srun_line}\n"
    )
    return script


def test_a_rank_that_dies_ends_its_siblings_instead_of_leaving_them_waiting(
    slurm_cluster, tmp_path
):
    """The launcher's `setup` lines are what makes srun end a job when one of its ranks fails
    (the others would otherwise sit in a collective until its 30-minute timeout, holding the
    node). Rank 1 exits at once, rank 0 would sleep 10 minutes: the job must end within 2."""
    script = _two_task_script(
        tmp_path, "srun bash -c 'if [ \"$SLURM_PROCID\" = 1 ]; then exit 3; fi; sleep 600'"
    )
    try:
        done = subprocess.run(
            ["sbatch", "--wait", str(script)], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", "--name", "job.sh"], capture_output=True, timeout=30)
        pytest.fail("rank 0 kept running after rank 1 failed: srun did not end the job")
    assert done.returncode != 0, "sbatch --wait reports the job's failure"


def test_a_taken_rendezvous_port_fails_the_job_at_once_with_its_name(slurm_cluster, tmp_path):
    """Two ranks under plain srun; the port their job id maps to is held by this process. Rank 0
    names the port and the fix, and the job ends (rank 1 would otherwise wait on it for ever)."""
    import socket

    from hpcgen.engine.distributed import _stable_port

    script = _two_task_script(
        tmp_path,
        f"srun {sys.executable} {REPO}/launch/train.py model=ddpm experiment=smoke "
        f"hydra.run.dir={tmp_path}/run",
    )
    submit = ["sbatch", "--hold", "--parsable", str(script)]
    job = subprocess.run(submit, capture_output=True, text=True, check=True).stdout.strip()
    with socket.socket() as holder:
        holder.bind(("", _stable_port(job)))
        holder.listen()
        subprocess.run(["scontrol", "release", job], check=True)
        slurm.wait_until_finished([job], timeout_s=240)
        if slurm.job_state(job) in slurm.ACTIVE_STATES:
            subprocess.run(["scancel", job], capture_output=True)
            pytest.fail("the job kept running with its rendezvous port taken")
    log = (tmp_path / "job.out").read_text()
    assert slurm.job_state(job) == "FAILED", log[-3000:]
    assert f"rendezvous port {_stable_port(job)}" in log and "Resubmit the job" in log, log[-3000:]


def test_prepare_runs_as_an_array_and_matches_a_local_prepare(slurm_cluster, tmp_path):
    import sys

    from hpcgen.config import DataConfig
    from hpcgen.data.shards import prepare

    common = [
        "data=synthetic",
        "data.num_samples=120",
        "data.samples_per_shard=20",
        "data.resolution=16",
    ]
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch" / "prepare.py"),
            *common,
            f"data.root={tmp_path / 'hydra'}",
            "hydra/launcher=slurm",
            "num_tasks=3",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Bypassing sacct error" not in result.stdout + result.stderr
    assert len(list((tmp_path / "sweep").glob(".submitit/*_2"))) == 1  # 3 array tasks
    sbatch = subprocess.run(
        [
            "sbatch",
            "--wait",
            "--array=0-1",
            f"--output={tmp_path}/prep-%a.out",
            str(REPO / "slurm" / "prepare_array.sbatch"),
            *common,
            f"data.root={tmp_path / 'sb'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HPCGEN_PYTHON": sys.executable},
    )
    assert sbatch.returncode == 0, sbatch.stderr + "".join(
        p.read_text() for p in tmp_path.glob("prep-*.out")
    )
    local = prepare(
        DataConfig(
            root=str(tmp_path / "local"), resolution=16, num_samples=120, samples_per_shard=20
        ),
        log=lambda *_: None,
    )

    def shards(root):
        return json.loads((root / "manifest.json").read_text())["shards"]

    assert shards(tmp_path / "hydra") == shards(tmp_path / "sb") == local["shards"]


def _last_step(run_dir) -> int:
    return last_metrics(run_dir).get("step", 0)


def _status(run_dir) -> str | None:
    return (read_run(run_dir) or {}).get("status")


def _running(job_id: str) -> bool:
    return slurm.job_state(job_id) == "RUNNING"


class _SweepWatch:
    """Waits on a SLURM sweep's progress. Fails early, with the evidence, when the launcher
    has died or nothing moved (no new step, no state change) for `stall_s` seconds; cancels
    the sweep's jobs at the end so a failure cannot hold the node for the tests after it."""

    def __init__(self, sweep, launcher, log, stall_s: float = 300.0):
        self.sweep, self.launcher, self.log, self.stall_s = sweep, launcher, log, stall_s

    def _progress(self):
        runs = sorted(p for p in self.sweep.iterdir() if p.is_dir() and p.name.isdigit())
        return tuple((_last_step(r), _status(r)) for r in runs)

    def until(self, condition, what: str, launcher_may_end: bool = False) -> None:
        import time

        seen, moved = None, time.monotonic()
        while True:
            if condition():
                return
            if self.launcher.poll() is not None and not launcher_may_end:
                pytest.fail(f"the launcher exited ({self.launcher.returncode}) while waiting "
                            f"for {what}\n{self.evidence()}")  # fmt: skip
            progress = self._progress() if self.sweep.is_dir() else None
            if progress != seen:
                seen, moved = progress, time.monotonic()
            elif time.monotonic() - moved > self.stall_s:
                pytest.fail(f"nothing moved for {self.stall_s:.0f} s while waiting for {what}; "
                            f"runs (last step, status): {seen}\n{self.evidence()}")  # fmt: skip
            time.sleep(0.05)

    def job_ids(self) -> list[str]:
        folder = self.sweep / ".submitit"
        return sorted({p.name.split("_")[0] for p in folder.iterdir()}) if folder.is_dir() else []

    def evidence(self) -> str:
        """squeue, each job's scontrol record, and the tails of the launcher's and jobs' logs."""
        parts = []
        for command in (
            ["squeue", "-a"],
            *(["scontrol", "show", "job", j] for j in self.job_ids()),
        ):
            out = subprocess.run(command, capture_output=True, text=True, timeout=30)
            parts.append(f"$ {' '.join(command)}\n{out.stdout}{out.stderr}")
        logs = [self.log, *sorted((self.sweep / ".submitit").glob("*/*_log.*"))]
        for path in logs:
            if path.is_file():
                parts.append(f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(parts)[-12000:]

    def cancel(self) -> None:
        if self.launcher.poll() is None:
            self.launcher.kill()
            self.launcher.wait()
        for job in self.job_ids():
            subprocess.run(["scancel", job], capture_output=True, timeout=30)


@pytest.mark.parametrize(
    "model,ranks,usr2,requeue",
    [("ddpm", 1, 3, 1), ("gan", 2, 2, 0)],
    ids=["ddpm-1rank", "gan-2ranks"],
)
def test_preempted_job_requeues_resumes_and_matches_the_uninterrupted_one(
    slurm_cluster, tmp_path, model, ranks, usr2, requeue
):
    """Job 1 of the array is preempted by SIGUSR2 (scancel --signal, as SLURM does before a
    preemption) and by `scontrol requeue`; job 0 runs through. Same training config, same node:
    the final weights and optimizer states of every rank must be bitwise equal."""
    import random
    import sys

    import torch

    sweep, steps = tmp_path / "sweep", 200
    log = tmp_path / "launcher.log"
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would stall the launcher
        launcher = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "launch" / "train.py"),
                "-m",
                f"model={model}",
                "hydra/launcher=slurm",
                f"hydra.launcher.tasks_per_node={ranks}",
                "experiment=smoke",
                f"trainer.max_steps={steps}",
                "trainer.log_every_steps=1",
                "trainer.ckpt_every_steps=50",
                "trainer.keep_last_ckpts=3,4",  # train identically
                f"hydra.sweep.dir={sweep}",
            ],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    run = sweep / "1"
    targets = sorted(random.Random(7).sample(range(15, steps - 15), usr2 + requeue))
    watch = _SweepWatch(sweep, launcher, log)
    try:
        for i, target in enumerate(targets):
            watch.until(lambda t=target: _last_step(run) >= t, f"job 1 to reach step {target}")
            job = json.loads((run / "run.json").read_text())["slurm_job_id"]
            assert _running(job), f"job {job} ended before preemption {i} at step {target}"
            command = (
                ["scancel", "--signal=USR2", job] if i < usr2 else ["scontrol", "requeue", job]
            )
            subprocess.run(command, check=True)
            watch.until(
                lambda: _status(run) == "preempted",
                f"job 1 to save and stop after preemption {i}",
            )
        watch.until(
            lambda: launcher.poll() is not None, "the launcher to end", launcher_may_end=True
        )
    finally:
        watch.cancel()
    output = log.read_text()
    assert launcher.returncode == 0, output[-4000:]
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["preemptions"] == usr2 + requeue
    events = [e["event"] for e in record["events"]]
    assert events == ["started", *["preempted", "resumed"] * (usr2 + requeue), "completed"]
    logged = [json.loads(line)["step"] for line in open(run / "metrics.jsonl")]
    assert logged == list(range(1, steps + 1)), "metrics.jsonl must have no gap and no repeat"
    final = f"checkpoints/step_{steps:08d}"
    files = sorted(
        p.relative_to(sweep / "0" / final)
        for p in (sweep / "0" / final).rglob("*.pt")
        if "hpcgen_rank" not in p.name
    )
    engines = {"ddpm": 1, "gan": 2}[model]
    # ZeRO: model states + optimizer states per rank; one rank runs stage 0: one file (both)
    assert len(files) == engines * (1 + ranks if ranks > 1 else 1), files
    for name in files:
        ref, pre = (torch.load(sweep / j / final / name, weights_only=False) for j in "01")
        assert _equal(ref, pre), f"{name} differs between the reference and the preempted run"
    for rank in range(ranks):  # the EMA, sampler history and counters live in hpcgen's files
        name = f"hpcgen_rank{rank:05d}.pt"
        ref, pre = (torch.load(sweep / j / final / name, weights_only=True)["task"] for j in "01")
        assert _equal(ref, pre), f"{name} (EMA, counters) differs after preemptions"


def _equal(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "__dict__") and not isinstance(a, type):  # e.g. DeepSpeed's LossScaler
        return type(a) is type(b) and _equal(vars(a), vars(b))
    return a == b


def test_evaluation_array_on_slurm_evaluates_each_checkpoint_once(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    trained = run_train(
        ["-m", "model=gan", "experiment=smoke", "trainer.max_steps=30", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    evaluate = [
        sys.executable,
        str(REPO / "launch" / "evaluate.py"),
        f"run={sweep}",
        "hydra/launcher=slurm",
        f"hydra.sweep.dir={tmp_path / 'eval-sweep'}",
        "eval.extractor=tiny-test",
        "eval.num_samples=32",
        "eval.ref_samples=128",
        "eval.kid_subsets=5",
        "eval.kid_subset_size=32",
    ]
    first = subprocess.run(evaluate, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-4000:]
    assert "one array of 3 task(s)" in output
    results = [
        json.loads((sweep / "0" / "eval" / f"step_{s:08d}.json").read_text()) for s in (10, 20, 30)
    ]
    assert [r["step"] for r in results] == [10, 20, 30]
    logs = list((tmp_path / "eval-sweep").glob(".submitit/*/*_log.out"))
    array_ids = {p.parent.name.split("_")[0] for p in logs}
    assert len(logs) == 3 and len(array_ids) == 1, "three tasks of one SLURM array"
    again = subprocess.run(evaluate, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to evaluate" in again.stdout


def test_plain_sbatch_array_evaluates_the_manifest_of_a_dry_run(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    trained = run_train(
        ["-m", "model=gan", "experiment=smoke", f"hydra.sweep.dir={sweep}"], cwd=tmp_path
    )
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    small = ["eval.extractor=tiny-test", "eval.num_samples=32", "eval.ref_samples=128",
             "eval.kid_subsets=5", "eval.kid_subset_size=32"]  # fmt: skip
    dry = subprocess.run(
        [sys.executable, str(REPO / "launch" / "evaluate.py"), f"run={sweep / '0'}", "dry_run=true",
         *small],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-2000:]
    line = next(x for x in dry.stdout.splitlines() if x.startswith("sbatch "))
    assert not result_paths(sweep / "0"), "a dry run evaluates nothing"
    env = {**os.environ, "HPCGEN_PYTHON": sys.executable}
    submitted = subprocess.run(
        # the local node has 2 CPUs; the script asks for 4, as a GPU node would have
        [*line.split()[:1], "--wait", "--cpus-per-task=1", f"--output={tmp_path}/eval-%A_%a.out",
         *line.split()[1:]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    logs = "".join(p.read_text() for p in tmp_path.glob("eval-*.out"))
    assert submitted.returncode == 0, submitted.stderr + logs[-3000:]
    steps = sorted(json.loads(p.read_text())["step"] for p in result_paths(sweep / "0"))
    assert steps == [10, 20] and "FID" in logs
