"""Preflight: every job of a sweep composed and checked before anything runs or is queued.

A bad config, a missing data path, a batch that does not divide over the ranks, an
unreachable SLURM or a run directory that a live job holds: one line, exit status 2.
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hpcgen import slurm
from hpcgen.cli.compose import compose_jobs, to_prepare_config, to_train_config
from hpcgen.config import ConfigError, build_section
from hpcgen.data.shards import (
    SHARD_MANIFEST,
    check_matches,
    check_max_images,
    data_root,
    read_manifest,
    set_aside_if_stale,
)
from hpcgen.data.sources import open_source
from hpcgen.engine.lease import RunBusyError, check_free


def world_size_of(launcher: DictConfig) -> int:
    if "SlurmLauncher" in str(launcher.get("_target_", "")):
        return int(launcher.nodes) * int(launcher.tasks_per_node)
    return 1


def check_train_job(cfg: DictConfig) -> None:
    """What can be known before queueing: data present, batch layout, shards per rank."""
    train_cfg = to_train_config(cfg)
    world_size = world_size_of(cfg.hydra.launcher)
    train_cfg.trainer.resolve_batch(world_size, train_cfg.deepspeed.grad_accum_steps)
    if train_cfg.eval.during_training:
        check_eval_settings(train_cfg.eval.settings)
    data = train_cfg.data
    root = data_root(data)
    if data.name == "lsun_bedroom" and not (root / SHARD_MANIFEST).is_file():
        raise ConfigError(
            f"data.root={root} holds no prepared shards ({SHARD_MANIFEST} missing): point "
            "data.root (or HPCGEN_LSUN_SHARDS) at a shard directory, or write one with python "
            "launch/prepare.py data=lsun_bedroom data.source=<bedroom_train_lmdb> "
            f"data.root={root}"
        )
    if data.name == "synthetic":
        set_aside_if_stale(root)  # an older hpcgen's generated shards are written again
    if (root / SHARD_MANIFEST).is_file():
        # every shard present with its recorded size, written for this resolution
        check_matches(data, root, read_manifest(root))
    if data.name == "folder" and not (root / SHARD_MANIFEST).is_file():
        open_source(data.name, data.source, data.num_samples, data.resolution)
    if data.max_images is not None:
        readers = world_size * max(data.num_workers, 1)
        if (root / SHARD_MANIFEST).is_file():
            total, where = int(read_manifest(root)["total"]), f"the shards in {root}"
            check_max_images(data.max_images, total, readers, where)
        elif data.name == "synthetic":
            where = f"the synthetic set (data.num_samples={data.num_samples})"
            check_max_images(data.max_images, data.num_samples, readers, where)
    if data.name == "synthetic":
        shards = math.ceil(data.num_samples / data.samples_per_shard)
        if shards * data.samples_per_shard < world_size * max(data.num_workers, 1):
            raise ConfigError(
                f"data.num_samples={data.num_samples} cannot feed {world_size} rank(s) x "
                f"{max(data.num_workers, 1)} reader(s): generate more (data.num_samples)"
            )


def check_eval_settings(settings: dict) -> None:
    """eval.settings are launch/evaluate.py's eval fields: refused here, not in the eval job."""
    from hpcgen.eval.evaluate import EvalConfig  # torch: only when evaluation is on

    build_section(EvalConfig, settings, "eval.settings")


def check_prepare_job(cfg: DictConfig) -> None:
    data, _, _ = to_prepare_config(cfg)
    open_source(data.name, data.source, data.num_samples, data.resolution)


CHECKS = {"train": check_train_job, "prepare": check_prepare_job}


def preflight(
    overrides: list[str], config_name: str = "train", multirun: bool = False
) -> list[DictConfig]:
    """Compose and check every job of the sweep before anything runs or is queued."""
    jobs = compose_jobs(overrides, config_name)
    if any("SlurmLauncher" in str(job.hydra.launcher.get("_target_", "")) for job in jobs):
        ok, why = slurm.reachable()
        if not ok:
            raise ConfigError(f"hydra/launcher=slurm but SLURM is not reachable: {why}")
    for job in jobs:
        CHECKS[config_name](job)
    if config_name == "train":
        check_run_dirs_free(jobs, multirun or jobs[0].hydra.mode == "MULTIRUN")
    return jobs


def job_run_dir(job: DictConfig, num: int, multirun: bool) -> Path:
    """Where Hydra will put job `num`: run.dir, or sweep.dir / sweep.subdir."""
    if not multirun:
        return Path(str(job.hydra.run.dir))
    job = copy.deepcopy(job)  # the caller's config keeps its unset job number
    OmegaConf.set_readonly(job, False)
    OmegaConf.set_struct(job, False)
    job.hydra.job.num = num
    return Path(str(job.hydra.sweep.dir)) / str(job.hydra.sweep.subdir)


def check_run_dirs_free(jobs: list[DictConfig], multirun: bool) -> None:
    """A relaunch into run directories that live jobs hold (their lease, or their SLURM jobs
    still queued or running) is refused, naming them all."""
    busy = []
    for num, job in enumerate(jobs):
        try:
            check_free(job_run_dir(job, num, multirun), float(job.trainer.lease_heartbeat_s))
        except RunBusyError as err:
            busy.append(str(err))
    sweep = Path(str(jobs[0].hydra.sweep.dir)) if multirun else None
    queued = slurm.active_jobs_of(sweep / ".submitit") if sweep else {}
    if queued and not busy:
        ids = " ".join(sorted(queued))
        busy.append(
            f"{sweep} has SLURM jobs that are still queued or running "
            f"({', '.join(f'{j} {s}' for j, s in sorted(queued.items()))}): they will resume "
            f"it themselves. Wait for them (python launch/status.py {sweep}) or scancel {ids}, "
            "then run this command again"
        )
    if busy:
        raise RunBusyError(busy[0] if len(busy) == 1 else " | ".join(busy))


def preflight_or_exit(argv: list[str], config_name: str = "train") -> None:
    """Run preflight on the overrides in argv; one line on stderr and exit 2 when it fails."""
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return  # --help, --cfg, -cn ...: Hydra's own business
    multirun = bool({"-m", "--multirun"} & set(argv))
    try:
        preflight([a for a in argv if not a.startswith("-")], config_name, multirun)
    except ConfigError as err:
        print(f"hpcgen: error: {err}", file=sys.stderr)
        sys.exit(2)
