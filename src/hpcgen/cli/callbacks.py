"""Hydra callbacks, each listed by name under hydra.callbacks in the configs that use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hpcgen import slurm
from hpcgen.console import print_summary
from hpcgen.engine.run_record import read_run
from hpcgen.status import run_dirs


class SqueueWatcher(Callback):
    """On clusters without accounting, submitit polls squeue instead of warning about sacct."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "Slurm" in str(config.hydra.launcher.get("_target_", "")):
            slurm.watch_with_squeue_when_accounting_is_off()


class SweepSummary(Callback):
    """Prints the table of jobs when a run or a sweep ends (in the launching process)."""

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        print_summary(Path(config.hydra.runtime.output_dir), "hpcgen run")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        runs = run_dirs(sweep) if sweep.is_dir() else []
        job_ids = [r["slurm_job_id"] for r in map(read_run, runs) if r and r.get("slurm_job_id")]
        slurm.wait_until_finished(job_ids)  # results are in; let SLURM close the jobs first
        print_summary(sweep, f"hpcgen sweep {sweep}")
