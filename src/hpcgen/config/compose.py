"""Composing configs outside @hydra.main (preflight, evaluation's array, the benchmarks) and
turning a composed config into the typed schemas of this package.

The checkout is the install: CONFIG_DIR is the checkout's configs/, the same directory the
launch/ scripts name in @hydra.main (pip install -e . keeps it beside the package). Not imported
by hpcgen.config itself: only what composes pays for Hydra's compose API.
"""

from __future__ import annotations

import itertools
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from hpcgen import CHECKOUT
from hpcgen.config import ConfigError, DataConfig, TrainConfig, build_section

CONFIG_DIR = CHECKOUT / "configs"


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
                # Hydra's "Error merging override x=y" names the value; its cause says why
                why = ": ".join(str(e).strip() for e in (err, err.__cause__) if e is not None)
                raise ConfigError(
                    f"cannot compose {' '.join(combo) or 'the defaults'}: {' '.join(why.split())}"
                ) from err
    GlobalHydra.instance().clear()
    return jobs


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
