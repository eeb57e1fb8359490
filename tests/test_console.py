"""The status table renders what the run directories say; without SLURM, state is run.json's."""

from __future__ import annotations

import json

from rich.console import Console

from hpcgen.console import print_status
from hpcgen.status import sweep_status


def test_rows_come_from_run_json_when_the_job_ran_locally(tmp_path):
    run = tmp_path / "0"
    run.mkdir()
    (run / "run.json").write_text(
        json.dumps(
            {
                "model": "gan",
                "status": "failed",
                "step": 7,
                "max_steps": 20,
                "preemptions": 2,
                "last_losses": {"loss_d": 1.25, "loss_g": 0.75},
                "slurm_job_id": None,
                "overrides": ["model=gan"],
                "started": 100.0,
                "ended": 3761.0,
                "error": "RuntimeError: boom",
            }
        )
    )
    (run / "metrics.jsonl").write_text('{"step": 7, "kimg": 0.11, "images_per_s": 42.5}\n')
    log = [f"line {i}" for i in range(30)] + ["RuntimeError: boom [at step 7]"]
    (run / "train.log").write_text("\n".join(log) + "\n")
    (run / "eval").mkdir()
    for step, fid in ((5, 80.0), (7, 74.25)):
        result = {"fid": fid, "precision": 0.625, "recall": 0.125 + step / 100}
        (run / "eval" / f"step_{step:08d}.json").write_text(json.dumps(result))
    status = sweep_status(tmp_path)
    (row,) = status["jobs"]
    assert row["state"] == "FAILED" and row["slurm_job_id"] is None
    assert row["best_fid"] == {"fid": 74.25, "step": 7} and row["wall_s"] == 3661.0
    assert row["evaluation"]["fid_curve"] == [[5, 80.0], [7, 74.25]]
    assert row["evaluation"]["last"]["recall"] == 0.195
    console = Console(record=True, width=250)
    print_status(status, "t", console)
    text = console.export_text()
    for expected in (
        "FAILED",
        "7/20",
        "loss_d=1.2500",
        "74.25 @7",
        "80 > 74.2",  # the FID curve so far
        "0.625 / 0.195 @7",  # the newest result's precision / recall
        "1:01:01",
        "42.5",
        "local",
        "job 0 failed: RuntimeError: boom",
        "  | line 29\n  | RuntimeError: boom [at step 7]",  # the log's tail, markup left alone
    ):
        assert expected in text, expected
    assert "line 22" not in text  # the last 8 lines only
