"""Rich tables for people; plain, control-character-free text when the output is a log file.

The status side (launch/status.py, the sweep callbacks): console -> status -> engine, never back;
a training job's own terminal output (progress bar, layer tables) is engine/terminal.py."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hpcgen.engine.run_dir import sample_grids
from hpcgen.engine.terminal import wide_console
from hpcgen.status import log_tail, sweep_status

STATE_STYLE = {
    "COMPLETED": "green",
    "RUNNING": "cyan",
    "PENDING": "yellow",
    "FAILED": "red",
    "PREEMPTED": "magenta",
    "REQUEUED": "magenta",
    "CANCELLED": "red",
    "DIED": "red",
}


def _bar(step: int, max_steps: int | None, width: int = 10) -> str:
    if not max_steps:
        return str(step)
    filled = round(width * min(step / max_steps, 1.0))
    return f"{'█' * filled}{'·' * (width - filled)} {step}/{max_steps}"


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def fid_curve(evaluation: dict[str, Any], points: int = 4) -> str:
    """'412 > 201 > 98 (2 pending: 1234 1235; +1 to do)': the newest FIDs in step order, the
    evaluations submitted during training that are still live (SLURM job ids, or 'queued' for
    the end of a local run), and the other committed checkpoints still without a result."""
    curve, live = evaluation["fid_curve"], [p for p in evaluation.get("pending", []) if p["live"]]
    todo = evaluation["unevaluated"] - len(live)
    notes = []
    if live:
        notes.append(f"{len(live)} pending: " + " ".join(p["job_id"] or "queued" for p in live))
    if todo:
        notes.append(f"+{todo} to do")
    note = f" ({'; '.join(notes)})" if notes else ""
    if not curve:
        return note.strip() or "-"
    shown = " > ".join(f"{fid:.3g}" for _, fid in curve[-points:])
    more = "... " if len(curve) > points else ""
    return more + shown + note


def precision_recall_cell(evaluation: dict[str, Any]) -> str:
    last = evaluation["last"]
    if not last or last.get("precision") is None:
        return "-"
    return f"{last['precision']:.3f} / {last['recall']:.3f} @{last['step']}"


def status_table(status: dict[str, Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    columns = (
        "job",
        "overrides",
        "job id",
        "state",
        "steps",
        "kimg",
        "img/s",
        "last loss",
        "checkpoint",
        "preempt.",
        "best FID",
        "FID curve",
        "P / R",
        "skipped",
        "wall",
    )
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in status["jobs"]:
        style = STATE_STYLE.get(row["state"], "")
        fid = row["best_fid"]
        table.add_row(
            row["job"],
            " ".join(row["overrides"]) or "-",
            row["slurm_job_id"] or "local",
            f"[{style}]{row['state']}[/]" if style else row["state"],
            _bar(row["step"], row["max_steps"]),
            _fmt(row["kimg"], ".2f"),
            _fmt(row["images_per_s"], ".1f"),
            " ".join(f"{k}={v:.4f}" for k, v in row["losses"].items()) or "-",
            row["latest_checkpoint"] or "-",
            str(row["preemptions"]),
            f"{fid['fid']:.2f} @{fid['step']}" if fid else "-",
            fid_curve(row["evaluation"]),
            precision_recall_cell(row["evaluation"]),
            str(row["skipped_samples"]),
            _wall(row["wall_s"]),
        )
    return table


def print_status(status: dict[str, Any], title: str, console: Console | None = None) -> None:
    """The table, the newest sample grid of each job, failures' errors, and what to do next."""
    console = console or wide_console()
    console.print(status_table(status, title))
    for row in status["jobs"]:
        grids = sample_grids(Path(row["run_dir"]))
        where = [f"run dir {row['run_dir']}"] + ([f"samples {grids[-1]}"] if grids else [])
        where += [f"log {row['log']}"] if row["log"] else []
        console.print(
            f"job {row['job']} ({row['model'] or 'no run.json'}): " + ", ".join(where),
            highlight=False,
            soft_wrap=True,
        )
        if row["error"] and row["status"] == "failed":
            console.print(f"job {row['job']} failed: {row['error']}", highlight=False)
            for line in log_tail(row, 8):
                console.print(f"  | {line}", highlight=False, markup=False, soft_wrap=True)
    for line in status["next"]:
        console.print(f"next: {line}", highlight=False, soft_wrap=True)
    report = f"python launch/report.py {shlex.quote(status['path'])}"
    console.print(f"curves and images on one page: {report}", highlight=False, soft_wrap=True)


def print_summary(path: Path, title: str) -> dict[str, Any]:
    """Status of a run or sweep directory, printed; returns the data."""
    status = sweep_status(path)
    print_status(status, title)
    return status
