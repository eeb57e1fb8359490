"""launch/train.py ... dry_run=true: every job of the sweep composed and checked, and what the
sweep will create and cost (jobs, nodes, checkpoints, projected device-hours); nothing runs."""

from __future__ import annotations

import sys
from pathlib import Path

from hpcgen.cli.compose import compose_jobs, to_train_config
from hpcgen.cli.preflight import check_train_job, world_size_of
from hpcgen.config import ConfigError
from hpcgen.engine.disk import human
from hpcgen.plan import describe, gpu_bench_throughputs, plan_job


def wants_dry_run(argv: list[str]) -> bool:
    """dry_run=true (or yes/on/1, as OmegaConf reads booleans) among the overrides."""
    values = [a.split("=", 1)[1].strip().lower() for a in argv if a.startswith("dry_run=")]
    return bool(values) and values[-1] in ("true", "yes", "on", "1")


def dry_run(argv: list[str]) -> int:
    """Print the plan of every job; 2 when a job would fail its preflight, else 0."""
    overrides = [a for a in argv if not a.startswith("-")]
    jobs = compose_jobs(overrides, "train")
    failed, kept, kept_bytes, hours, nodes = 0, 0, 0, 0.0, 0
    units = set()
    for num, job in enumerate(jobs):
        launcher = job.hydra.launcher
        world = world_size_of(launcher)
        job_nodes = int(launcher.nodes) if "SlurmLauncher" in str(launcher._target_) else 1
        nodes += job_nodes
        cfg = to_train_config(job)
        print(f"job {num}: {cfg.model.name} {cfg.model.preset} {cfg.data.resolution} px on "
              f"{world} rank(s), {job_nodes} node(s)")  # fmt: skip
        try:
            bench = job.get("gpu_bench")
            plan = plan_job(cfg, world, gpu_bench_throughputs(Path(bench)) if bench else [])
            print("  " + describe(plan, world).replace("\n", "\n  "))
            kept += plan.checkpoints_kept
            kept_bytes += plan.checkpoint_bytes
            hours += plan.device_hours
            units.add("GPU-hours" if plan.on_gpu else "device-hours at the CPU's rate")
            check_train_job(job)
        except ConfigError as err:
            failed += 1
            print(f"  would fail: {err}")
    print(
        f"dry run: {len(jobs)} job(s) on {nodes} node(s) in all, {kept} checkpoint(s) kept "
        f"({human(kept_bytes)}), {hours:,.0f} {' + '.join(sorted(units)) or 'hours'}; nothing "
        f"was run or queued{f'; {failed} job(s) would fail' if failed else ''}"
    )
    return 2 if failed else 0


def dry_run_or_continue(argv: list[str]) -> None:
    """With dry_run=true among the overrides: print the plan and exit; otherwise return."""
    if not wants_dry_run(argv):
        return
    try:
        sys.exit(dry_run(argv))
    except ConfigError as err:
        print(f"hpcgen: error: {err}", file=sys.stderr)
        sys.exit(2)
