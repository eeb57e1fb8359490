"""What `launch/status.py` shows: one row per job of a run or sweep directory, and what to do next.

Everything comes from the run directories (run.json, metrics.jsonl, checkpoints/, eval/) and,
for jobs that ran on SLURM, squeue/scontrol — never sacct, which fails without accounting.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import yaml

from hpcgen import slurm
from hpcgen.engine.eval_queue import pending
from hpcgen.engine.lease import holder_alive, read_lease
from hpcgen.engine.metric_groups import LOSSES, keys_of, metric_group
from hpcgen.engine.run_dir import (
    checkpoint_dir,
    committed_checkpoints,
    latest_name,
    result_path,
    result_paths,
    step_of,
)
from hpcgen.engine.run_record import last_metrics, read_run

RUNNING = ("RUNNING", "running")


def run_dirs(path: Path) -> list[Path]:
    """The run directories under a sweep (its numbered job dirs), or [path] for a single run."""
    if (path / "run.json").is_file() or (path / ".hydra").is_dir():
        return [path]
    jobs = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(jobs, key=lambda p: int(p.name))


def _results(run_dir: Path) -> list[dict[str, Any]]:
    """eval/step_N.json of a run, by step; a file that does not parse is passed over."""
    results = []
    for path in result_paths(run_dir):
        try:
            result = json.loads(path.read_text())
            results.append(result | {"step": step_of(path), "fid": float(result["fid"])})
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return sorted(results, key=lambda r: r["step"])


def evaluation_summary(
    run_dir: Path, results: list[dict[str, Any]], running: bool = False
) -> dict[str, Any]:
    """The FID curve so far (one point per result), the newest result's precision/recall and
    protocol, how many committed checkpoints have no result yet, and the evaluations submitted
    during training that are still pending (live: a SLURM job queued or running, or queued for
    the end of a local run that still trains)."""
    last = results[-1] if results else {}
    waiting = [
        p | {"live": p["state"] in slurm.ACTIVE_STATES or (p["state"] == "QUEUED" and running)}
        for p in pending(run_dir)
    ]
    return {
        "evaluated": len(results),
        "unevaluated": _unevaluated(run_dir),
        "pending": waiting,
        "fid_curve": [[r["step"], r["fid"]] for r in results],
        "last": {k: last.get(k) for k in ("step", "fid", "precision", "recall", "protocol")}
        if last
        else None,
    }


def _log_file(sweep: Path, job_id: str | None) -> str | None:
    if not job_id:
        return None
    log = sweep / ".submitit" / job_id / f"{job_id}_0_log.out"
    return str(log) if log.is_file() else None


def log_tail(row: dict[str, Any], lines: int = 20) -> list[str]:
    """The last lines of a job's error log (SLURM's .err, else the Hydra job's train.log)."""
    log = Path(row["log"]) if row.get("log") else Path(row["run_dir"]) / "train.log"
    for candidate in (log.with_suffix(".err"), log):
        if candidate.is_file():
            return candidate.read_text(errors="replace").splitlines()[-lines:]
    return []


def job_row(run_dir: Path) -> dict[str, Any]:
    """Everything known about one job, as plain JSON-able values."""
    run = read_run(run_dir) or {}
    metrics = last_metrics(run_dir)
    job_id = run.get("slurm_job_id")
    slurm_state = slurm.job_state(job_id) if job_id else None
    if slurm_state is None and run.get("status") == "running" and not _holder_lives(run_dir):
        slurm_state = "DIED"  # killed without a word (SIGKILL, OOM, a lost node): resumable
    end = run.get("ended") if run.get("status") != "running" else None
    results = _results(run_dir)
    best = min(results, key=lambda r: r["fid"]) if results else None
    return {
        "job": run_dir.name,
        "run_dir": str(run_dir),
        "overrides": run.get("overrides", []),
        "model": run.get("model"),
        "slurm_job_id": job_id,
        "state": slurm_state or str(run.get("status", "not started")).upper(),
        "status": run.get("status"),
        "step": run.get("step", 0),
        "max_steps": run.get("max_steps"),
        "kimg": metrics.get("kimg"),
        "images_per_s": metrics.get("images_per_s"),
        "losses": {
            k: v for k, v in (run.get("last_losses") or {}).items() if metric_group(k) == LOSSES
        },
        "peak_memory_gb": next((metrics[k] for k in keys_of("memory", metrics)), None),
        "latest_checkpoint": latest_name(checkpoint_dir(run_dir)),
        "preemptions": run.get("preemptions", 0),
        "best_fid": {"fid": best["fid"], "step": best["step"]} if best else None,
        "evaluation": evaluation_summary(
            run_dir, results, running=(slurm_state or run.get("status")) in RUNNING
        ),
        "skipped_samples": run.get("skipped_samples", metrics.get("skipped_samples", 0)),
        "wall_s": ((end or time.time()) - run["started"]) if run.get("started") else None,
        "log": _log_file(run_dir.parent, job_id),
        "error": run.get("error"),
    }


def _holder_lives(run_dir: Path) -> bool:
    """Whether the process that holds the run directory's lease still runs."""
    lease = read_lease(run_dir)
    return lease is not None and holder_alive(lease, float(lease.get("heartbeat_s", 30)))[0]


def resume_command(sweep: Path) -> str | None:
    """The command that continues every unfinished job of a sweep (from multirun.yaml)."""
    try:
        overrides = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["overrides"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    hydra = [
        o
        for o in overrides.get("hydra", [])
        if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))
    ]
    args = [
        "python",
        "launch/train.py",
        "-m",
        *hydra,
        *overrides.get("task", []),
        f"hydra.sweep.dir={sweep}",
    ]
    return " ".join(shlex.quote(a) for a in args)


def sweep_status(path: Path) -> dict[str, Any]:
    """The data behind the table and the footer (also what --json prints)."""
    rows = [job_row(d) for d in run_dirs(path)]
    unfinished = [r for r in rows if r["status"] != "completed"]
    next_steps = []
    if unfinished and not any(r["state"] in slurm.ACTIVE_STATES for r in unfinished):
        single = len(rows) == 1 and rows[0]["run_dir"] == str(path)
        command = _rerun_command(path) if single else resume_command(path)
        if command:
            next_steps.append(f"resume the unfinished job(s): {command}")
    unevaluated = sum(
        r["evaluation"]["unevaluated"] - sum(p["live"] for p in r["evaluation"]["pending"])
        for r in rows
    )
    if unevaluated:
        command = f"python launch/evaluate.py run={shlex.quote(str(path))}"
        next_steps.append(f"evaluate {unevaluated} checkpoint(s) without a result: {command}")
    return {"path": str(path), "jobs": rows, "next": next_steps}


def _unevaluated(run_dir: Path) -> int:
    """Committed checkpoints without eval/step_N.json (what launch/evaluate.py would do)."""
    committed = committed_checkpoints(checkpoint_dir(run_dir))
    return sum(not result_path(ckpt).is_file() for ckpt in committed)


def _rerun_command(run_dir: Path) -> str | None:
    """A single run continues when started again with the same overrides in the same dir."""
    try:
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        return None
    args = ["python", "launch/train.py", *overrides, f"hydra.run.dir={run_dir}"]
    return " ".join(shlex.quote(a) for a in args)
