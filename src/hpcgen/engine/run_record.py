"""run.json (status of one run, rank 0 writes it atomically) and metrics.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from hpcgen import CHECKOUT

METRICS = "metrics.jsonl"


def git_revision() -> str | None:
    """The checkout's commit (with -dirty when it has uncommitted changes), if there is one."""
    try:
        out = subprocess.run(
            ["git", "-C", str(CHECKOUT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def slurm_job_id() -> str | None:
    """The SLURM id of this job as squeue shows it (array jobs: ARRAYID_TASKID)."""
    if "SLURM_ARRAY_JOB_ID" in os.environ and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def read_run(run_dir: Path) -> dict[str, Any] | None:
    """run.json, or None when there is none or it does not decode (a crash mid-write)."""
    path = run_dir / "run.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _decoded_lines(text: str) -> tuple[list[dict[str, Any]], int]:
    """metrics.jsonl's rows and how many lines did not decode (a write cut by a kill)."""
    rows, cut = [], 0
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            cut += bool(line.strip())
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
        else:
            cut += 1
    return rows, cut


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete metrics.jsonl row, oldest first; lines cut by a kill are left out.

    The one reader of metrics.jsonl (status, report, benchmarks, resume)."""
    return _decoded_lines(_read_text(run_dir / METRICS))[0]


def last_metrics(run_dir: Path) -> dict[str, Any]:
    """The newest complete metrics.jsonl row, or {} when there is none yet."""
    rows = read_metrics(run_dir)
    return rows[-1] if rows else {}


class RunRecord:
    """Keeps run.json current; a no-op on ranks other than 0."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.data: dict[str, Any] = read_run(run_dir) or {}
        if enabled and not self.data and (run_dir / "run.json").is_file():
            print(
                f"WARNING: {run_dir / 'run.json'} does not decode (a crash mid-write?): "
                "starting a new one; its history and preemption count are lost",
                flush=True,
            )

    def update(self, **fields: Any) -> None:
        if not self.enabled:
            return
        self.data.update(fields, updated=time.time())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / ".run.json.tmp"
        try:
            with open(tmp, "w") as f:  # flushed before the rename: a crash leaves old or new
                f.write(json.dumps(self.data, indent=1))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.run_dir / "run.json")
        except OSError:
            tmp.unlink(missing_ok=True)  # e.g. a full disk: no empty temp file left behind
            raise

    def add_event(self, event: str, **fields: Any) -> None:
        """Append to run.json's history (started, resumed, preempted, completed, failed)."""
        events = [*self.data.get("events", []), {"event": event, "time": time.time(), **fields}]
        self.update(events=events)

    def truncate_metrics(self, after_step: int) -> None:
        """Keep the rows up to `after_step` (the step this attempt starts from): rows logged
        after it would repeat, and a line cut by a kill would swallow the next one."""
        path = self.run_dir / METRICS
        if not self.enabled or not path.is_file():
            return
        old = _read_text(path)
        rows, cut = _decoded_lines(old)
        keep = [row for row in rows if row["step"] <= after_step]
        text = "".join(json.dumps(row) + "\n" for row in keep)
        if cut:
            print(
                f"WARNING: {path}: dropped {cut} line(s) that do not decode (cut by a kill "
                "mid-write)",
                flush=True,
            )
        if text != old:  # also a last line that lost only its newline
            tmp = path.with_name(f".{METRICS}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.run_dir / METRICS, "a") as f:
                f.write(json.dumps(metrics) + "\n")
