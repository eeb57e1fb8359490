"""A run saved by 2 ranks resumes on 1 (requeued onto fewer GPUs) through DeepSpeed's universal
checkpoint conversion at ZeRO-1/2, and is refused with both sizes named at ZeRO-3.

Ranks are separate processes of launch/train.py on the loopback, as torchrun starts them."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest
import torch

from hpcgen.engine.distributed import free_port, loopback_rank_env
from hpcgen.engine.manifest import verify
from hpcgen.engine.run_dir import COMMIT_MANIFEST, model_states_file
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def train(
    world: int, run_dir, *args: str, model: str = "ddpm"
) -> list[subprocess.CompletedProcess]:
    port, procs = free_port(), []
    for rank in range(world):
        env = loopback_rank_env(rank, world, port)
        cmd = [sys.executable, str(REPO / "launch" / "train.py"), f"model={model}",
               "experiment=smoke", "trainer.global_batch=8", "trainer.log_every_steps=1",
               f"hydra.run.dir={run_dir}", *args]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))  # fmt: skip
    return [
        subprocess.CompletedProcess(p.args, p.wait(timeout=900), p.stdout.read()) for p in procs
    ]


def test_a_two_rank_checkpoint_resumes_on_one_rank_through_the_universal_format(tmp_path):
    run = tmp_path / "run"
    for done in train(2, run, "trainer.max_steps=6", "trainer.ckpt_every_steps=3"):
        assert done.returncode == 0, done.stdout[-3000:]
    (done,) = train(1, run, "trainer.max_steps=10", "trainer.ckpt_every_steps=5")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "was saved by 2 ranks, this job has 1: converting it" in done.stdout
    # DeepSpeed's conversion carried the weights over exactly
    saved = torch.load(
        run / "checkpoints/step_00000006" / model_states_file("unet"), weights_only=False
    )["module"]
    zero = run / "checkpoints/universal-step_00000006/unet/universal/zero"
    for name, value in saved.items():
        assert torch.equal(torch.load(zero / name / "fp32.pt")["param"], value), name
    # the optimizer state carried over too: Adam has taken 10 steps, not 4
    final = run / "checkpoints/step_00000010"
    assert json.loads((final / COMMIT_MANIFEST).read_text())["world_size"] == 1
    optim = torch.load(
        final / "unet/state/zero_pp_rank_0_mp_rank_00_optim_states.pt", weights_only=False
    )["optimizer_state_dict"]["base_optimizer_state"]["state"]
    assert {int(s["step"]) for s in optim.values()} == {10}
    record = json.loads((run / "run.json").read_text())
    events = [(e["event"], e["step"], e["world_size"], e.get("from_world_size"))
              for e in record["events"] if e["event"] in ("started", "resumed")]  # fmt: skip
    assert events == [("started", 0, 2, None), ("resumed", 6, 1, 2)]
    steps = [json.loads(line)["step"] for line in open(run / "metrics.jsonl")]
    assert steps == list(range(1, 11)), "metrics.jsonl must have no gap and no repeat"


def test_a_run_started_unsharded_on_one_rank_goes_on_unsharded_on_two(tmp_path):
    """One rank takes stage 0; its checkpoint (whole copies in rank 0's file) loads on any
    number of ranks as it is, and the two ranks then continue at stage 0, saying why."""
    run = tmp_path / "run"
    (done,) = train(1, run, "trainer.max_steps=4", "trainer.ckpt_every_steps=4")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "one rank shards nothing: DeepSpeed stage 0 instead of deepspeed.zero_stage=2" in (
        done.stdout
    )
    dones = train(2, run, "trainer.max_steps=8", "trainer.ckpt_every_steps=4")
    for done in dones:
        assert done.returncode == 0, done.stdout[-3000:]
    assert (
        "ZeRO stage 0 on 2 rank(s), the stage the checkpoint was written with" in (dones[0].stdout)
        and "converting it" not in dones[0].stdout
    )
    final = json.loads((run / "checkpoints/step_00000008" / COMMIT_MANIFEST).read_text())
    assert final["world_size"] == 2 and final["zero_stage"] == 0
    optim = torch.load(run / "checkpoints/step_00000008" / model_states_file("unet"),
                       weights_only=False)["optimizer"]["state"]  # fmt: skip
    assert {int(s["step"]) for s in optim.values()} == {8}, "Adam's state went on from step 4"
    record = json.loads((run / "run.json").read_text())
    events = [(e["event"], e["step"], e["world_size"], e.get("from_world_size"))
              for e in record["events"] if e["event"] in ("started", "resumed")]  # fmt: skip
    assert events == [("started", 0, 1, None), ("resumed", 4, 2, 1)]


class PlantedCode:
    """A pickle that runs code when loaded: it creates `marker` (a stand-in for anything)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_converted_checkpoint_has_a_manifest_and_a_changed_one_is_never_unpickled(tmp_path):
    run = tmp_path / "run"
    for done in train(2, run, "trainer.max_steps=3", "trainer.ckpt_every_steps=3"):
        assert done.returncode == 0, done.stdout[-3000:]
    (done,) = train(1, run, "trainer.max_steps=3")  # converts step_3, trains no further
    assert done.returncode == 0, done.stdout[-3000:]
    universal = run / "checkpoints/universal-step_00000003"
    manifest = verify(universal, hashes=True)
    assert manifest["source"] == "step_00000003" and manifest["world_size"] == 2
    assert any(name.endswith("fp32.pt") for name in manifest["files"])
    # a file of the conversion replaced by one of the same size that runs code when unpickled
    target = next(p for p in sorted(universal.rglob("fp32.pt")))
    marker = tmp_path / "the-planted-pickle-ran"
    planted = pickle.dumps(PlantedCode(marker))
    target.write_bytes(planted + b"\0" * (target.stat().st_size - len(planted)))
    (done,) = train(1, run, "trainer.max_steps=3")
    assert done.returncode == 0, done.stdout[-3000:]
    assert not marker.exists(), "a file of the universal checkpoint was unpickled unverified"
    assert f"WARNING: {universal} does not verify" in done.stdout
    assert "converting step_00000003 again" in done.stdout
    verify(universal, hashes=True)  # converted afresh from the verified step_3


def test_a_zero3_checkpoint_of_another_world_size_is_refused_with_both_sizes(tmp_path):
    run = tmp_path / "run"
    for done in train(2, run, "deepspeed=zero3", "trainer.max_steps=3"):
        assert done.returncode == 0, done.stdout[-3000:]
    (done,) = train(1, run, "deepspeed=zero3", "trainer.max_steps=6")
    assert done.returncode != 0
    assert "saved by 2 ranks but this job has 1" in done.stdout
    assert "resume this ZeRO-3 run with 2 ranks" in done.stdout
    assert (run / "checkpoints/step_00000003" / COMMIT_MANIFEST).is_file()  # nothing lost


def test_two_rank_gan_under_zero3_runs_past_style_mixing_draws_that_differ_by_rank(tmp_path):
    # each rank draws its own style-mixing coin; under ZeRO-3 every forward gathers parameters
    # collectively, so a mapping forward on one rank only hung both at step 6 (before the fix)
    dones = train(2, tmp_path / "run", "deepspeed=zero3", "trainer.max_steps=12", model="gan")
    for done in dones:
        assert done.returncode == 0, done.stdout[-3000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["step"] == 12
