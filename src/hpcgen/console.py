"""Rich tables for people; plain, control-character-free text when the output is a log file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hpcgen import slurm
from hpcgen.engine.run_record import read_run

STATE_STYLE = {"COMPLETED": "green", "RUNNING": "cyan", "PENDING": "yellow", "FAILED": "red"}


def run_rows(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """One row per run directory, SLURM state from squeue/scontrol when the job ran there."""
    rows = []
    for run_dir in run_dirs:
        run = read_run(run_dir) or {}
        job_id = run.get("slurm_job_id")
        state = slurm.job_state(job_id) if job_id else None
        losses = run.get("last_losses") or {}
        rows.append(
            {
                "job_id": job_id or "local",
                "model": run.get("model", "?"),
                "state": state or str(run.get("status", "no run.json")).upper(),
                "step": run.get("step", 0),
                "max_steps": run.get("max_steps"),
                "last_loss": " ".join(f"{k}={v:.4f}" for k, v in losses.items()) or "-",
                "run_dir": str(run_dir),
            }
        )
    return rows


def summary_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("job id", "model", "state", "steps", "last loss", "run dir"):
        table.add_column(name, overflow="fold")
    for row in rows:
        style = STATE_STYLE.get(row["state"], "")
        steps = f"{row['step']}/{row['max_steps']}" if row["max_steps"] else str(row["step"])
        table.add_row(
            row["job_id"],
            row["model"],
            f"[{style}]{row['state']}[/]" if style else row["state"],
            steps,
            row["last_loss"],
            row["run_dir"],
        )
    return table


def print_summary(run_dirs: list[Path], title: str) -> list[dict[str, Any]]:
    rows = run_rows(run_dirs)
    console = Console(width=None if Console().is_terminal else 160)
    console.print(summary_table(rows, title))
    for row in rows:  # where to look next
        grids = sorted((Path(row["run_dir"]) / "samples").glob("step_*.png"))
        if grids:
            console.print(f"{row['model']} samples: {grids[-1]}", highlight=False)
    return rows
