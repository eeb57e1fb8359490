"""launch/train.py: every job of the sweep checked first, then each job's body."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hpcgen.cli.compose import to_train_config
from hpcgen.cli.dry_run import dry_run_or_continue
from hpcgen.cli.preflight import preflight_or_exit
from hpcgen.config import ConfigError

__all__ = ["dry_run_or_continue", "preflight_or_exit", "run_job"]


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """The body of every Hydra job (in this process or on a SLURM node)."""
    from hpcgen.engine.checkpoint import NoSpaceError
    from hpcgen.engine.lease import LeaseLost
    from hpcgen.engine.loop import Diverged, train  # heavy imports only in the job
    from hpcgen.engine.peer_watch import EXIT_CODE, PeerLost
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
    except (NoSpaceError, LeaseLost, PeerLost, Diverged) as err:  # each says everything: a
        print(f"hpcgen: error: {job}: {err}", file=sys.stderr, flush=True)  # traceback buries it
        sys.exit(EXIT_CODE if isinstance(err, PeerLost) else 1)
    except Preempted:
        raise
    except Exception as err:
        print(f"hpcgen: {job} failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        raise
