"""Shared fixtures: one data and output area per session, the local SLURM cluster, compose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session", autouse=True)
def hpcgen_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data and outputs of every test go under one temp area, shared by subprocesses and SLURM."""
    base = tmp_path_factory.mktemp("hpcgen")
    dirs = {"data": base / "data", "out": base / "out"}
    os.environ["HPCGEN_DATA_DIR"] = str(dirs["data"])
    os.environ["HPCGEN_OUTPUT_DIR"] = str(dirs["out"])
    return dirs


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The local SLURM cluster; skip when unreachable, unless HPCGEN_REQUIRE_SLURM=1 (CI)."""
    from hpcgen import slurm

    ok, why = slurm.reachable()
    if not ok:
        if os.environ.get("HPCGEN_REQUIRE_SLURM") == "1":
            pytest.fail(f"HPCGEN_REQUIRE_SLURM=1 but SLURM is not reachable: {why}")
        pytest.skip(f"SLURM not reachable: {why}")
    return why


def compose_train(overrides: list[str]):
    """Hydra's compose API on configs/train.yaml, hydra node included."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def run_train(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """launch/train.py in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_train_ranks(
    world: int,
    args: list[str],
    env: dict[str, str] | None = None,
    wrap: dict[int, list[str]] | None = None,
) -> list[subprocess.Popen]:
    """launch/train.py as `world` ranks on the loopback, as torchrun starts them (stdout
    dropped, stderr piped); `wrap[r]`: a command that rank r runs under (e.g. `unshare -m`)."""
    from hpcgen.engine.distributed import free_port, loopback_rank_env

    port, procs = free_port(), []
    for rank in range(world):
        cmd = [*(wrap or {}).get(rank, []), sys.executable, str(REPO / "launch" / "train.py")]
        rank_env = {**loopback_rank_env(rank, world, port), "OMP_NUM_THREADS": "1", **(env or {})}
        out = subprocess.DEVNULL
        procs.append(subprocess.Popen([*cmd, *args], env=rank_env, cwd=REPO, text=True,
                                      stdout=out, stderr=subprocess.PIPE))  # fmt: skip
    return procs
