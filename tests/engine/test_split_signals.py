"""Two ranks that saw different scheduler signals: real signals to one rank of a real 2-rank
run. The handler only sets a flag; at the next step where the ranks vote
(trainer.preempt_check_every_steps, and every step that writes) an all-reduce (MAX) of the flags
gives both ranks the same decision, so both save the same step and both leave as preempted."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from hpcgen.engine.checkpoint import FROM_RANK0, load_rank_state
from hpcgen.engine.manifest import verify
from hpcgen.engine.run_dir import checkpoint_dir, checkpoint_path, latest_step, rank_state_file
from hpcgen.engine.run_record import last_metrics, read_run
from tests.conftest import start_train_ranks
from tests.test_slurm import _equal

pytestmark = pytest.mark.slow


def run_until(run, step: int, ranks) -> None:
    """Wait until rank 0 has logged `step` (both ranks are then inside the loop, handlers in)."""
    deadline = time.monotonic() + 300
    while last_metrics(run).get("step", 0) < step:
        assert all(p.poll() is None for p in ranks), ranks[0].communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.02)


@pytest.mark.parametrize(
    "signals,check_every,leaves",
    [
        ({1: signal.SIGUSR2}, 1, "requeued"),
        ({0: signal.SIGTERM}, 3, "stopped"),
        ({0: signal.SIGTERM, 1: signal.SIGUSR2}, 1, "requeued"),  # the larger decision wins
    ],
    ids=["usr2-to-rank1", "term-to-rank0-vote-every-3", "term-rank0-usr2-rank1"],
)
def test_a_signal_seen_by_one_rank_saves_the_same_step_on_both_and_both_leave(
    signals, check_every, leaves, tmp_path, monkeypatch
):
    for name in [k for k in os.environ if k.startswith(("SLURM_", "SUBMITIT_"))]:
        monkeypatch.delenv(name)  # no scontrol requeue of whatever job runs these tests
    run = tmp_path / "run"
    args = [
        "experiment=smoke",
        "trainer.global_batch=8",
        "trainer.max_steps=100000",
        f"trainer.log_every_steps={check_every}",
        "trainer.ckpt_every_steps=1000",
        "trainer.sample_every_steps=1000",
        f"trainer.preempt_check_every_steps={check_every}",
        f"hydra.run.dir={run}",
    ]
    out = tmp_path / "rank0.out"  # rank 0's stdout, where it says how it leaves
    ranks = start_train_ranks(2, args, wrap={0: ["sh", "-c", f'exec "$0" "$@" > {out}']})
    try:
        run_until(run, 3, ranks)
        for rank, signum in signals.items():
            os.kill(ranks[rank].pid, signum)
        signalled_at = last_metrics(run)["step"]
        codes = [p.wait(timeout=120) for p in ranks]
        errs = [p.stderr.read() for p in ranks]
    finally:
        for p in ranks:
            p.kill()
            p.wait()
    assert codes == [0, 0], [e[-3000:] for e in errs]  # Preempted: SystemExit(0) on both
    record = read_run(run)
    assert record["status"] == "preempted" and record["preemptions"] == 1, record
    saved = latest_step(run)
    assert saved == record["step"] == record["events"][-1]["step"]
    assert record["events"][-1]["event"] == "preempted"
    # the next voting step after the signal: nothing trained past it, nothing lost before it
    assert signalled_at <= saved <= signalled_at + 2 * check_every and saved % check_every == 0
    ckpt = checkpoint_path(checkpoint_dir(run), saved)
    manifest = verify(ckpt, world_size=2, hashes=True)  # both ranks' files, committed
    assert manifest["step"] == saved
    for rank in (0, 1):  # each rank saved its own state, at the same step
        state = torch.load(ckpt / rank_state_file(rank), weights_only=False)
        assert state["step"] == saved
    # the EMA (equal on every rank) is in rank 0's file only; rank 1's loads it from there
    own0, own1 = (torch.load(ckpt / rank_state_file(r), weights_only=True) for r in (0, 1))
    assert "ema" not in own1["task"] and own1[FROM_RANK0] == {"task": ["ema"]}, own1.keys()
    loaded = load_rank_state(ckpt, 1)
    assert _equal(loaded["task"]["ema"], own0["task"]["ema"]) and FROM_RANK0 not in loaded
    assert _equal(loaded["task"]["generator"], own1["task"]["generator"])
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert f"[hpcgen] {leaves} after saving" in out.read_text()
    print(f"signals {signals} after step {signalled_at}: both ranks {leaves} at step {saved}")
