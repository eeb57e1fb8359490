"""launch/evaluate.py: a manifest of checkpoints to evaluate, then its entries here in sequence,
as one SLURM array (task=range(N)), or one array task."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig
from rich.console import Console
from rich.table import Table

from hpcgen import slurm
from hpcgen.cli.compose import compose_jobs, fail, resolve_plain
from hpcgen.config import ConfigError, build_section
from hpcgen.config.store import defaults_of
from hpcgen.eval.evaluate import (
    EvalConfig,
    build_manifest,
    evaluate_checkpoint,
    read_manifest_entry,
)


@dataclass
class EvaluateSchema:
    """configs/evaluate.yaml's root: launch/evaluate.py's keys and eval.* (EvalConfig, in
    eval/evaluate.py). Registered here, not in config/store.py: EvalConfig's module imports the
    evaluation stack (torch), which `import hpcgen.config` must not."""

    run: str = MISSING  # a run directory, or the sweep directory of a multirun
    select: str = "all"  # latest | milestones | all | step_N (select_checkpoints)
    force: bool = False  # re-evaluate checkpoints that already have a result
    dry_run: bool = False  # write the manifest and print the sbatch line for eval_array.sbatch
    manifest: str | None = None  # set by the array: evaluate one entry of this manifest ...
    task: int | None = None  # ... this one
    eval: EvalConfig = defaults_of(EvalConfig)
    max_parallel: int = 8  # SLURM: array tasks running at once


ConfigStore.instance().store(name="evaluate_schema", node=EvaluateSchema, provider="hpcgen")


def to_eval_config(cfg: DictConfig) -> EvalConfig:
    return build_section(EvalConfig, resolve_plain(cfg)["eval"], "eval")


def max_array_size() -> int | None:
    """SLURM's MaxArraySize (task ids must stay below it), or None when unknown."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if line.strip().startswith("MaxArraySize"):
            return int(line.split("=", 1)[1])
    return None


def evaluate_array_argv(argv: list[str]) -> list[str]:
    """Check the config first (a bad value: one line, status 2, as before Hydra composes it
    against EvaluateSchema); on SLURM, write the manifest here, then run its entries as one
    array (task=range(N))."""
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return argv  # --help, --cfg, -cn ...: Hydra's own business
    array = "hydra/launcher=slurm" in argv and not any(a.startswith("task=") for a in argv)
    try:
        jobs = compose_jobs([a for a in argv if not a.startswith("-")], "evaluate")
        for job in jobs:
            to_eval_config(job)
        if not array:
            return argv
        (job,) = jobs
        ok, why = slurm.reachable()
        if not ok:
            raise ConfigError(f"hydra/launcher=slurm but SLURM is not reachable: {why}")
        path, entries = build_manifest(
            Path(str(job.run)).expanduser().resolve(), job.select, job.force
        )
    except ConfigError as err:
        fail(err)
    if not entries:
        print(
            "[evaluate] nothing to evaluate: every selected checkpoint has a result (force=true "
            "evaluates again)"
        )
        sys.exit(0)
    n, limit = len(entries), max_array_size()
    if limit and n > limit - 1:
        print(
            f"[evaluate] {n} checkpoints but MaxArraySize={limit}: submitting the first "
            f"{limit - 1}; run the same command again afterwards for the rest"
        )
        n = limit - 1
    print(f"[evaluate] {len(entries)} checkpoint(s) in {path}: one array of {n} task(s)")
    flag = [] if {"-m", "--multirun"} & set(argv) else ["-m"]
    return (
        flag
        + argv
        + [
            f"manifest={path}",
            f"task=range({n})",
            f"hydra.launcher.array_parallelism={job.max_parallel}",
        ]
    )


def _print_results(results: list[dict]) -> None:
    table = Table(title="evaluation", title_justify="left")
    columns = ("run", "model", "step", "FID", "data floor", "FID / floor", "KID x 1e3", "P / R")
    for name in (*columns, "samples", "extractor", "seconds"):
        left = name in ("run", "model", "extractor")
        table.add_column(name, justify="left" if left else "right")
    for r in results:
        floor = r.get("fid_floor")
        table.add_row(
            Path(r["ckpt"]).parent.parent.name,
            r["model"],
            str(r["step"]),
            f"{r['fid']:.2f}",
            "-" if floor is None else f"{floor:.2f}",
            "-" if floor is None else f"{r['fid'] / floor:.1f}x",
            f"{1e3 * r['kid_mean']:.2f} ± {1e3 * r['kid_std']:.2f}",
            "-" if r.get("precision") is None else f"{r['precision']:.3f} / {r['recall']:.3f}",
            str(r["num_samples"]),
            r["extractor"],
            f"{r['seconds']:.0f}" + (" (kept)" if r.get("skipped") else ""),
        )
    Console(width=160).print(table)


def run_evaluate(cfg: DictConfig) -> Any:
    """One array task (manifest= task=), or the whole manifest in sequence here."""
    try:
        ecfg = to_eval_config(cfg)
        force = bool(cfg.force)
        if cfg.task is not None:
            entry = read_manifest_entry(Path(str(cfg.manifest)), int(cfg.task))
            print(f"[evaluate] task {cfg.task}: {entry['ckpt']}", flush=True)
            result = evaluate_checkpoint(entry, ecfg, force)
            print(f"[evaluate] step {result['step']}: FID {result['fid']:.3f} -> {entry['result']}")
            return result
        target = Path(str(cfg.run)).expanduser().resolve()
        path, entries = build_manifest(target, str(cfg.select), force)
    except ConfigError as err:
        fail(err)
    if cfg.dry_run:
        overrides = [o for o in HydraConfig.get().overrides.task if o.startswith("eval.")]
        print(f"[evaluate] {len(entries)} checkpoint(s) to evaluate, manifest {path}")
        if entries:
            print(
                f"sbatch --array=0-{len(entries) - 1}%{cfg.max_parallel} slurm/eval_array.sbatch "
                + " ".join([str(path), *overrides])
            )
        return entries
    results = [evaluate_checkpoint(entry, ecfg, force) for entry in entries]
    if results:
        _print_results(results)
    else:
        print("[evaluate] nothing to evaluate: every selected checkpoint has a result")
    return results
