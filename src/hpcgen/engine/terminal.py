"""What a training job shows on its own terminal: rank 0's progress bar and the networks' layer
tables. console.py (the status tables) builds on this; nothing here imports above engine/."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table


def wide_console() -> Console:
    """A terminal's own width; in a log file wide lines rather than an 80-column squeeze."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def print_layer_table(title: str, rows: list, console: Console | None = None) -> None:
    """A network's per-layer table (models/summary.py rows) with a total line."""
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("layer", "left"),
        ("parameters", "right"),
        ("buffers", "right"),
        ("output shape", "left"),
        ("dtype", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(r.name, f"{r.parameters:,}", f"{r.buffers:,}", r.output_shape, r.dtype)
    table.add_section()
    total_p, total_b = sum(r.parameters for r in rows), sum(r.buffers for r in rows)
    table.add_row("total", f"{total_p:,}", f"{total_b:,}", "", "")
    (console or wide_console()).print(table)


class StepProgress:
    """A rich progress bar for rank 0 in a terminal; in a log file (SLURM) nothing at all: the
    loop's plain lines at the log interval carry the progress, without control characters."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = None
        if enabled and sys.stdout.isatty():
            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=total, completed=done, info="")

    def update(self, step: int, losses: dict[str, float]) -> None:
        if self.progress is not None:
            info = " ".join(f"{k} {v:.3f}" for k, v in list(losses.items())[:3])
            self.progress.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
