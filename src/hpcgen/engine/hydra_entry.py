"""The Hydra side of launch/train.py: preflight of every sweep job, the job body, callbacks."""

from __future__ import annotations

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
from hpcgen.config import ConfigError, TrainConfig
from hpcgen.console import print_summary
from hpcgen.data.shards import MANIFEST, data_root, list_images
from hpcgen.engine.run_record import read_run

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """Resolve the composed config (minus `hydra`) into the typed TrainConfig."""
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        tree = OmegaConf.to_container(plain, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise ConfigError(
            f"{err.full_key} has no value: set it on the command line, e.g. {err.full_key}=<value>"
        ) from err
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve the config: {err.msg}") from err
    return TrainConfig.from_dict(tree)  # type: ignore[arg-type]


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


def check_job(cfg: TrainConfig, world_size: int) -> None:
    """What can be known before queueing: data present, batch layout, shards per rank."""
    cfg.trainer.resolve_batch(world_size, cfg.deepspeed.grad_accum_steps)
    root = data_root(cfg.data)
    if cfg.data.name == "lsun_bedroom" and not (root / MANIFEST).is_file():
        raise ConfigError(
            f"data.root={root} holds no prepared shards ({MANIFEST} missing): "
            "point data.root (or HPCGEN_LSUN_SHARDS) at a shard directory"
        )
    if cfg.data.name == "folder" and not (root / MANIFEST).is_file():
        list_images(Path(cfg.data.source).expanduser())
    if cfg.data.name == "synthetic":
        shards = math.ceil(cfg.data.num_samples / cfg.data.samples_per_shard)
        if shards < world_size:
            raise ConfigError(
                f"data.num_samples={cfg.data.num_samples} in shards of "
                f"{cfg.data.samples_per_shard} gives {shards} shard(s) for {world_size} ranks: "
                "lower data.samples_per_shard so every rank gets a shard"
            )


def preflight(overrides: list[str], config_name: str = "train") -> list[TrainConfig]:
    """Compose and check every job of the sweep; raises ConfigError naming what is wrong."""
    configs = []
    checked_slurm = False
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for combo in expand_sweep(overrides):
            try:
                cfg = compose(config_name, overrides=combo, return_hydra_config=True)
            except MissingConfigException as err:
                raise ConfigError(_missing_option_message(err)) from err
            except (HydraException, OmegaConfBaseException) as err:
                why = str(err).strip() or str(err.__cause__).strip()
                raise ConfigError(
                    f"cannot compose {' '.join(combo) or 'the defaults'}: {' '.join(why.split())}"
                ) from err
            train_cfg = to_train_config(cfg)
            world_size = world_size_of(cfg.hydra.launcher)
            if world_size_of(cfg.hydra.launcher) > 1 or "Slurm" in str(cfg.hydra.launcher):
                if not checked_slurm:
                    ok, why = slurm.reachable()
                    if not ok:
                        raise ConfigError(f"hydra/launcher=slurm but SLURM is not reachable: {why}")
                    checked_slurm = True
            check_job(train_cfg, world_size)
            configs.append(train_cfg)
    GlobalHydra.instance().clear()
    return configs


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


def preflight_or_exit(argv: list[str]) -> None:
    """Run preflight on the overrides in argv; one line on stderr and exit 2 when it fails."""
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return  # --help, --cfg, -cn ...: Hydra's own business
    try:
        preflight([a for a in argv if not a.startswith("-")])
    except ConfigError as err:
        print(f"hpcgen: error: {err}", file=sys.stderr)
        sys.exit(2)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """The body of every Hydra job (in this process or on a SLURM node)."""
    from hpcgen.engine.loop import train  # heavy imports only in the job

    hydra_cfg = HydraConfig.get()
    try:
        train_cfg = to_train_config(cfg)
    except ConfigError as err:
        print(f"hpcgen: error: {err}", file=sys.stderr)
        sys.exit(2)
    return train(train_cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task))


class SweepSummary(Callback):
    """Prints the table of jobs when a run or a sweep ends (in the launching process)."""

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        print_summary([Path(config.hydra.runtime.output_dir)], "hpcgen run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "Slurm" in str(config.hydra.launcher.get("_target_", "")):
            slurm.watch_with_squeue_when_accounting_is_off()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()]
        runs = sorted(jobs, key=lambda p: int(p.name))
        job_ids = [r["slurm_job_id"] for r in map(read_run, runs) if r and r.get("slurm_job_id")]
        slurm.wait_until_finished(job_ids)  # results are in; let SLURM close the jobs first
        print_summary(runs, f"hpcgen sweep {sweep}")
