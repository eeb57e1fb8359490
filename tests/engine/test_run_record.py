"""run.json and metrics.jsonl after a kill mid-write: readers skip the cut line, resume works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hpcgen.engine.loop import train
from hpcgen.engine.run_dir import latest_step
from hpcgen.engine.run_record import RunRecord, last_metrics, read_metrics, read_run
from tests.conftest import REPO
from tests.engine.test_train_cpu import smoke_config


def test_a_cut_last_line_is_skipped_and_truncate_drops_it(tmp_path, capsys):
    rows = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "metrics.jsonl").write_text(text + '{"step": 4, "lo')  # killed mid-write
    assert read_metrics(tmp_path) == rows
    assert last_metrics(tmp_path) == rows[-1]
    RunRecord(tmp_path, enabled=True).truncate_metrics(after_step=2)
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(
        json.dumps(r) + "\n" for r in rows[:2]
    )
    assert "dropped 1 line(s) that do not decode" in capsys.readouterr().out


def test_a_last_line_without_its_newline_gets_one_so_the_next_row_stays_apart(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}')  # cut before "\n"
    record = RunRecord(tmp_path, enabled=True)
    record.truncate_metrics(after_step=2)
    record.log_metrics({"step": 3})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_a_cut_run_json_reads_as_none_and_a_new_record_warns(tmp_path, capsys):
    (tmp_path / "run.json").write_text('{"status": "running", "ste')
    assert read_run(tmp_path) is None
    RunRecord(tmp_path, enabled=True).update(status="running")
    assert "run.json does not decode" in capsys.readouterr().out
    assert read_run(tmp_path)["status"] == "running"


@pytest.mark.slow
def test_a_run_sigkilled_mid_write_resumes_from_its_checkpoint(tmp_path):
    """A real training process killed with SIGKILL, its last metrics line cut as a kill in
    the write leaves it; the next start resumes and logs every step once."""
    args = ["model=ddpm", "experiment=smoke", "trainer.max_steps=1000", "trainer.log_every_steps=1",
            "trainer.ckpt_every_steps=5", f"hydra.run.dir={tmp_path}"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "train.py"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while last_metrics(tmp_path).get("step", 0) < 8:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    path = tmp_path / "metrics.jsonl"
    with open(path, "r+b") as f:  # cut the newest line in half, as a kill inside write() does
        lines = f.read().splitlines(keepends=True)
        f.truncate(sum(map(len, lines[:-1])) + len(lines[-1]) // 2)
    newest = json.loads(lines[-2])
    assert last_metrics(tmp_path) == newest  # status and report still read the run
    assert read_run(tmp_path)["status"] == "running"  # what SIGKILL leaves

    committed = latest_step(tmp_path)
    assert committed >= 5 and os.path.getsize(path) > 0
    result = train(smoke_config("ddpm", "trainer.max_steps=12", "trainer.log_every_steps=1",
                                "trainer.ckpt_every_steps=5"), tmp_path)  # fmt: skip
    assert result["step"] == 12
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, 13))
    assert len(path.read_text().splitlines()) == 12  # no cut line left in the file
    events = [e["event"] for e in read_run(tmp_path)["events"]]
    assert events == ["started", "resumed", "completed"]
