"""run.json (status of one run, rank 0 writes it atomically) and metrics.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any


def git_revision() -> str | None:
    """The checkout's commit (with -dirty when it has uncommitted changes), if there is one."""
    repo = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"],
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
    path = run_dir / "run.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def last_metrics(run_dir: Path) -> dict[str, Any]:
    """The newest metrics.jsonl line, or {} (no file yet, or a line being written)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1]) if lines else {}
    except (OSError, json.JSONDecodeError):
        return {}


class RunRecord:
    """Keeps run.json current; a no-op on ranks other than 0."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.data: dict[str, Any] = read_run(run_dir) or {}

    def update(self, **fields: Any) -> None:
        if not self.enabled:
            return
        self.data.update(fields, updated=time.time())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / ".run.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.run_dir / "run.json")

    def add_event(self, event: str, **fields: Any) -> None:
        """Append to run.json's history (started, resumed, preempted, completed, failed)."""
        events = [*self.data.get("events", []), {"event": event, "time": time.time(), **fields}]
        self.update(events=events)

    def truncate_metrics(self, after_step: int) -> None:
        """Drop lines past `after_step` (logged after the checkpoint a resume starts from)."""
        path = self.run_dir / "metrics.jsonl"
        if not self.enabled or not path.is_file():
            return
        lines = path.read_text().splitlines()
        keep = [line for line in lines if line and json.loads(line)["step"] <= after_step]
        if len(keep) != len(lines):
            tmp = path.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in keep))
            os.replace(tmp, path)

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
