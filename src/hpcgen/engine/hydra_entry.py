"""The Hydra side of launch/train.py: preflight of every sweep job, the job body, callbacks."""

from __future__ import annotations

import copy
import itertools
import math
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from hpcgen import slurm
from hpcgen.config import ConfigError, DataConfig, TrainConfig, build_section
from hpcgen.console import print_summary
from hpcgen.data.shards import (
    SHARD_MANIFEST,
    check_matches,
    data_root,
    read_manifest,
    set_aside_if_stale,
)
from hpcgen.data.sources import open_source
from hpcgen.engine.run_record import read_run
from hpcgen.status import run_dirs

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"


def resolve_plain(cfg: DictConfig) -> dict[str, Any]:
    """The composed config minus `hydra`, resolved to plain containers."""
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        return OmegaConf.to_container(plain, resolve=True, throw_on_missing=True)  # type: ignore
    except MissingMandatoryValue as err:
        raise ConfigError(
            f"{err.full_key} has no value: set it on the command line, e.g. {err.full_key}=<value>"
        ) from err
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve the config: {err.msg}") from err


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """Resolve the composed config (minus `hydra`) into the typed TrainConfig."""
    return TrainConfig.from_dict(resolve_plain(cfg))


def to_prepare_config(cfg: DictConfig) -> tuple[DataConfig, int, int]:
    """(data config, task index, number of tasks) of a prepare job."""
    tree = resolve_plain(cfg)
    task_index, num_tasks = tree.get("task_index", 0), tree.get("num_tasks", 1)
    if not (
        isinstance(num_tasks, int)
        and num_tasks >= 1
        and isinstance(task_index, int)
        and 0 <= task_index < num_tasks
    ):
        raise ConfigError(
            f"task_index={task_index} num_tasks={num_tasks}: need 0 <= task_index < num_tasks"
        )
    return build_section(DataConfig, tree.get("data", {}), "data"), task_index, num_tasks


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """The override list of every job a multirun would launch (cartesian product of sweeps)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    options = []
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            options.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            options.append([o.input_line])
    return [list(combo) for combo in itertools.product(*options)]


def world_size_of(launcher: DictConfig) -> int:
    if "SlurmLauncher" in str(launcher.get("_target_", "")):
        return int(launcher.nodes) * int(launcher.tasks_per_node)
    return 1


def check_train_job(cfg: DictConfig) -> None:
    """What can be known before queueing: data present, batch layout, shards per rank."""
    train_cfg = to_train_config(cfg)
    world_size = world_size_of(cfg.hydra.launcher)
    train_cfg.trainer.resolve_batch(world_size, train_cfg.deepspeed.grad_accum_steps)
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
    if data.name == "synthetic":
        shards = math.ceil(data.num_samples / data.samples_per_shard)
        if shards * data.samples_per_shard < world_size * max(data.num_workers, 1):
            raise ConfigError(
                f"data.num_samples={data.num_samples} cannot feed {world_size} rank(s) x "
                f"{max(data.num_workers, 1)} reader(s): generate more (data.num_samples)"
            )


def check_prepare_job(cfg: DictConfig) -> None:
    data, _, _ = to_prepare_config(cfg)
    open_source(data.name, data.source, data.num_samples, data.resolution)


CHECKS = {"train": check_train_job, "prepare": check_prepare_job}


def compose_jobs(overrides: list[str], config_name: str) -> list[DictConfig]:
    """Compose every job of the sweep (hydra node included); ConfigError names what is wrong."""
    jobs = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for combo in expand_sweep(overrides):
            try:
                jobs.append(compose(config_name, overrides=combo, return_hydra_config=True))
            except MissingConfigException as err:
                raise ConfigError(_missing_option_message(err)) from err
            except (HydraException, OmegaConfBaseException) as err:
                why = str(err).strip() or str(err.__cause__).strip()
                raise ConfigError(
                    f"cannot compose {' '.join(combo) or 'the defaults'}: {' '.join(why.split())}"
                ) from err
    GlobalHydra.instance().clear()
    return jobs


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
    from hpcgen.engine.lease import RunBusyError, check_free

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


def _missing_option_message(err: MissingConfigException) -> str:
    group = (err.missing_cfg_file or "").split("/")[0] if err.missing_cfg_file else None
    options = (
        sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        if group and (CONFIG_DIR / group).is_dir()
        else []
    )
    if options:
        name = err.missing_cfg_file.split("/", 1)[1]
        return f"unknown {group} {name!r}: choose one of {', '.join(options)} ({group}=...)"
    return str(err).splitlines()[0]


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
        print(f"hpcgen: error: {err}", file=sys.stderr)
        sys.exit(2)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """The body of every Hydra job (in this process or on a SLURM node)."""
    from hpcgen.engine.checkpoint import NoSpaceError
    from hpcgen.engine.loop import train  # heavy imports only in the job
    from hpcgen.engine.preemption import Preempted

    hydra_cfg = HydraConfig.get()
    delay = hydra_cfg.launcher.get("signal_delay_s") if "launcher" in hydra_cfg else None
    overrides = list(hydra_cfg.overrides.task)
    # with 40 jobs in a sweep, a failure must say which one it is
    job = f"job {hydra_cfg.job.get('num', 0)} ({' '.join(overrides) or 'defaults'})"
    try:  # a bad input found on the node (data changed since preflight): one line, status 2
        return train(
            to_train_config(cfg),
            Path(hydra_cfg.runtime.output_dir),
            overrides,
            signal_delay_s=delay,
        )
    except ConfigError as err:
        print(f"hpcgen: error: {job}: {err}", file=sys.stderr)
        sys.exit(2)
    except NoSpaceError as err:  # says everything; the traceback would only bury it
        print(f"hpcgen: error: {job}: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Preempted:
        raise
    except Exception as err:
        print(f"hpcgen: {job} failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        raise


class SqueueWatcher(Callback):
    """On clusters without accounting, submitit polls squeue instead of warning about sacct."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "Slurm" in str(config.hydra.launcher.get("_target_", "")):
            slurm.watch_with_squeue_when_accounting_is_off()


class SweepSummary(SqueueWatcher):
    """Prints the table of jobs when a run or a sweep ends (in the launching process)."""

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        print_summary(Path(config.hydra.runtime.output_dir), "hpcgen run")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        runs = run_dirs(sweep) if sweep.is_dir() else []
        job_ids = [r["slurm_job_id"] for r in map(read_run, runs) if r and r.get("slurm_job_id")]
        slurm.wait_until_finished(job_ids)  # results are in; let SLURM close the jobs first
        print_summary(sweep, f"hpcgen sweep {sweep}")


def run_bench(cfg: DictConfig) -> dict[str, Any]:
    """Run one benchmark suite, print its numbers, write bench.json into the run directory."""
    import json

    from rich.console import Console
    from rich.table import Table

    suites = {
        name: f"hpcgen.benchmarks.{name}"
        for name in (
            "data",
            "sampling",
            "engine",
            "zero",
            "peer",
            "checkpoint",
            "evaluation",
            "gpu",
        )
    }
    if cfg.suite not in suites:
        print(
            f"hpcgen: error: suite={cfg.suite} is unknown: choose one of {', '.join(suites)}",
            file=sys.stderr,
        )
        sys.exit(2)
    import importlib

    from hpcgen.benchmarks.common import machine

    module = importlib.import_module(suites[cfg.suite])
    params = OmegaConf.to_container(cfg[cfg.suite], resolve=True)
    result = module.run(Path(cfg.workdir).expanduser(), **params)  # type: ignore[arg-type]
    result = {"suite": cfg.suite, "machine": machine(), **result}
    out = Path(HydraConfig.get().runtime.output_dir) / "bench" / f"{cfg.suite}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    table = Table(title=f"bench suite={cfg.suite} ({out})", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in _flatten(result):
        table.add_row(key, f"{value:,.4g}" if isinstance(value, float) else str(value))
    Console(width=120).print(table)
    return result


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, number) rows: medians and ratios, not the per-repeat lists."""
    rows = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("machine", "config", "targets"):
            rows += _flatten(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((name, value))
        elif key == "targets":
            rows += [(f"target {k}", v) for k, v in value.items()]
    return rows


def run_generate(cfg: DictConfig) -> list[Path]:
    """launch/generate.py: one PNG per seed and a grid; a bad checkpoint is one line, status 2."""
    from hpcgen.engine.generate import generate, parse_seeds

    try:
        ckpt = Path(str(cfg.ckpt)).expanduser().resolve()
        seeds = parse_seeds(cfg.seeds, int(cfg.n))
        out = Path(cfg.out) if cfg.out else ckpt.parent.parent / "generated" / ckpt.name
        written = generate(
            ckpt,
            seeds,
            out,
            cfg.sampler,
            bool(cfg.grid),
            bool(cfg.individual),
            truncation_psi=cfg.get("psi"),
        )
    except MissingMandatoryValue:
        print(
            "hpcgen: error: ckpt is required: python launch/generate.py "
            "ckpt=<run>/checkpoints/step_<8-digit step> n=16",
            file=sys.stderr,
        )
        sys.exit(2)
    except (ConfigError, ValueError) as err:
        print(f"hpcgen: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"[generate] {len(seeds)} image(s) from {ckpt} -> {out}")
    return written
