"""Which checkpoints an evaluation takes (select=...), and the SLURM array's size cap; on a
run directory laid out as training writes it, without training."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from hpcgen.cli import evaluate as cli_evaluate
from hpcgen.cli.compose import resolve_plain
from hpcgen.config import ConfigError
from hpcgen.engine.run_dir import checkpoint_dir, checkpoint_path, commit_manifest, step_of
from hpcgen.eval.evaluate import select_checkpoints
from tests.conftest import compose_train


def fake_run(run_dir, steps, milestone_every: int):
    """A run's resolved config and committed (empty) checkpoints of the given steps."""
    cfg = compose_train(
        ["experiment=smoke", f"trainer.ckpt_milestone_every_steps={milestone_every}"]
    )
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(resolve_plain(cfg)), run_dir / ".hydra" / "config.yaml")
    (run_dir / "run.json").write_text(json.dumps({"status": "completed"}))
    for step in steps:
        ckpt = checkpoint_path(checkpoint_dir(run_dir), step)
        ckpt.mkdir(parents=True)
        commit_manifest(ckpt).write_text(json.dumps({"step": step, "files": {}}))
    return run_dir


@pytest.mark.parametrize(
    "select,every,expected",
    [
        ("milestones", 20, [20, 40, 60]),
        ("milestones", 0, [60]),  # no milestones kept: the newest alone
        ("milestones", 1000, [60]),  # none reached yet: the newest alone
        ("latest", 20, [60]),
        ("all", 20, [10, 20, 30, 40, 50, 60]),
        ("step_30", 20, [30]),
    ],
)
def test_select_picks_the_checkpoints_it_names(tmp_path, select, every, expected):
    run = fake_run(tmp_path / "run", range(10, 70, 10), every)
    assert [step_of(c) for c in select_checkpoints(run, select)] == expected


def test_an_unknown_select_names_the_choices(tmp_path):
    run = fake_run(tmp_path / "run", [10], 0)
    with pytest.raises(ConfigError, match="latest | milestones | all | step_N"):
        select_checkpoints(run, "newest")


def test_an_array_larger_than_max_array_size_submits_what_fits(tmp_path, monkeypatch, capsys):
    run = fake_run(tmp_path / "run", range(10, 60, 10), 0)
    monkeypatch.setattr(cli_evaluate.slurm, "reachable", lambda: (True, "test"))
    monkeypatch.setattr(cli_evaluate, "max_array_size", lambda: 3)  # task ids 0..2
    argv = cli_evaluate.evaluate_array_argv([f"run={run}", "select=all", "hydra/launcher=slurm"])
    assert "task=range(2)" in argv and argv[0] == "-m"
    assert "5 checkpoints but MaxArraySize=3: submitting the first 2" in capsys.readouterr().out
    manifest = json.loads((run / "eval" / "manifest.json").read_text())
    assert len(manifest["entries"]) == 5  # the rest waits for the next run of the command
