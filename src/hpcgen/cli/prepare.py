"""launch/prepare.py: image sources to shards, one process or a SLURM array of tasks."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from hpcgen.cli.compose import fail, to_prepare_config
from hpcgen.cli.preflight import preflight_or_exit
from hpcgen.config import ConfigError

__all__ = ["prepare_array_argv", "preflight_or_exit", "run_prepare"]


def prepare_array_argv(argv: list[str], default_tasks: int = 8) -> list[str]:
    """On SLURM, prepare is an array: add `-m task_index=range(N) num_tasks=N` when not given."""
    if "hydra/launcher=slurm" not in argv or any(a.startswith("task_index=") for a in argv):
        return argv
    given = [a for a in argv if a.startswith("num_tasks=")]
    num_tasks = int(given[0].split("=", 1)[1]) if given else default_tasks
    flag = [] if {"-m", "--multirun"} & set(argv) else ["-m"]  # flags before the overrides
    extra = [f"task_index=range({num_tasks})"] + ([] if given else [f"num_tasks={num_tasks}"])
    return flag + argv + extra


def run_prepare(cfg: DictConfig) -> dict[str, Any] | None:
    """The body of a prepare job: this task's shards, and the manifest if it completes the set."""
    from hpcgen.data.shards import prepare

    try:
        data, task_index, num_tasks = to_prepare_config(cfg)
        return prepare(data, task_index, num_tasks, log=lambda line: print(line, flush=True))
    except ConfigError as err:
        fail(err)
        return None
