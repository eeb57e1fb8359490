"""The summary table reads run directories; without SLURM the state comes from run.json."""

from __future__ import annotations

import json

from rich.console import Console

from hpcgen.console import run_rows, summary_table


def test_rows_come_from_run_json_when_the_job_ran_locally(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run.json").write_text(
        json.dumps(
            {
                "model": "gan",
                "status": "completed",
                "step": 20,
                "max_steps": 20,
                "last_losses": {"loss_d": 1.25, "loss_g": 0.75},
                "slurm_job_id": None,
            }
        )
    )
    rows = run_rows([tmp_path / "a", tmp_path / "missing"])
    assert rows[0] == {
        "job_id": "local",
        "model": "gan",
        "state": "COMPLETED",
        "step": 20,
        "max_steps": 20,
        "last_loss": "loss_d=1.2500 loss_g=0.7500",
        "run_dir": str(tmp_path / "a"),
    }
    assert rows[1]["state"] == "NO RUN.JSON"
    console = Console(record=True, width=200)
    console.print(summary_table(rows, "t"))
    text = console.export_text()
    assert "COMPLETED" in text and "20/20" in text and "loss_d=1.2500" in text
