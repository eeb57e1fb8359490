"""Eval-overlap suite: training images/s with eval.during_training off and on, on SLURM.

The same GAN run (launch/train.py, hydra/launcher=slurm) is trained `repeats` times each way,
in turns (off, on, off, on, ...); with it on, every milestone's evaluation is submitted as its
own SLURM job while training goes on. img/s is the mean of metrics.jsonl's intervals after the
first (which holds start-up). Target: the ratio on / off within the spread of the runs."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from hpcgen import CHECKOUT
from hpcgen.engine.run_dir import eval_dir, submission_paths
from hpcgen.engine.run_record import read_metrics
from hpcgen.slurm import reachable


def _train(sweep: Path, overrides: list[str], on: bool) -> dict:
    args = [sys.executable, str(CHECKOUT / "launch" / "train.py"), "-m", "hydra/launcher=slurm",
            *overrides, f"eval.during_training={str(on).lower()}",
            f"hydra.sweep.dir={sweep}"]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, cwd=CHECKOUT)
    if done.returncode != 0:
        raise SystemExit(
            f"hpcgen: error: suite=eval_overlap: the training sweep in {sweep} failed:\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )
    rates = [row["images_per_s"] for row in read_metrics(sweep / "0")][1:]
    if not rates:
        raise SystemExit(
            f"hpcgen: error: suite=eval_overlap: {sweep / '0'} logged fewer than two intervals; "
            "raise eval_overlap.overrides' trainer.max_steps or lower trainer.log_every_steps"
        )
    return {"images_per_s": statistics.mean(rates), "intervals": len(rates),
            "wall_s": time.monotonic() - started}  # fmt: skip


def _wait_for_evaluations(sweep: Path, timeout_s: float) -> int:
    """Evaluations of a run that are still pending (they must not overlap the next run)."""
    deadline, run = time.monotonic() + timeout_s, sweep / "0"
    while True:
        pending = [p for p in submission_paths(run) if not (eval_dir(run) / p.name).is_file()]
        if not pending or time.monotonic() > deadline:
            return len(pending)
        time.sleep(1.0)


def run(workdir: Path, overrides: list[str], repeats: int, settle_s: float) -> dict:
    ok, why = reachable()
    if not ok:
        raise SystemExit(
            f"hpcgen: error: suite=eval_overlap needs SLURM ({why}): start the local one "
            "with 'sudo slurm/local-cluster.sh start'"
        )
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for rep in range(repeats):
        for side in ("off", "on"):
            sweep = workdir / "eval_overlap" / f"{stamp}-{side}-{rep}"
            row = _train(sweep, overrides, side == "on")
            row["pending_after_s"] = _wait_for_evaluations(sweep, settle_s)
            runs[side].append(row)
    means = {side: statistics.mean(r["images_per_s"] for r in rows) for side, rows in runs.items()}
    spread = max(r["images_per_s"] for rows in runs.values() for r in rows) - min(
        r["images_per_s"] for rows in runs.values() for r in rows
    )
    return {
        "config": {"overrides": overrides, "repeats": repeats},
        "runs": runs,
        "images_per_s_off": means["off"],
        "images_per_s_on": means["on"],
        "on_vs_off": means["on"] / means["off"],
        "spread_vs_off": spread / means["off"],
        "targets": {"on_vs_off": "within 1 +- spread_vs_off (the runs' own noise)"},
    }
