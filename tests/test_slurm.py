"""The SLURM path for real: Hydra multirun -> hydra-submitit-launcher -> the local cluster."""

from __future__ import annotations

import json
import subprocess

import pytest

from hpcgen import slurm
from tests.conftest import REPO, run_train

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
        assert run["slurm_job_id"] and (sweep / str(job) / "checkpoints" / "latest").is_file()
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
        "hpcgen_rank00000.pt",
        "hpcgen_rank00001.pt",
    }
    manifest = json.loads((ckpt / "COMMITTED").read_text())
    assert manifest["world_size"] == 2
