"""model.activation_checkpointing: the U-Net's blocks recomputed in the backward give the same
loss and gradients bit for bit, keep less memory, leave sampling alone, and train and resume
under DeepSpeed as the plain network does."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch
from torch.utils import checkpoint as torch_checkpoint

from hpcgen.benchmarks.memory import step_memory
from hpcgen.engine.loop import train
from hpcgen.engine.run_dir import checkpoint_dir, checkpoint_path, rank_state_file
from hpcgen.models import unet as unet_module
from hpcgen.models.unet import PRESETS, Recomputable, UNet, build_unet
from tests.engine.test_train_cpu import smoke_config, weights

# tiny, with what breaks equality if the recomputation differs: dropout (an RNG draw per block)
# and ADM's resampling residual blocks (checkpointed too)
TINY_DROPOUT = dataclasses.replace(PRESETS["tiny"], dropout=0.1, resblock_updown=True)


def _net(checkpointing: bool, preset=TINY_DROPOUT) -> UNet:
    torch.manual_seed(0)
    net = UNet(preset, 16, out_channels=6, activation_checkpointing=checkpointing)
    with torch.no_grad():  # off ADM's zero init, so that every gradient is non-zero
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _loss_and_grads(net: UNet) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x, t = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.arange(4)
    torch.manual_seed(2)  # dropout's draws
    loss = net(x, t).square().mean()
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in net.named_parameters()}


def test_loss_and_every_gradient_are_bitwise_those_without_checkpointing():
    # bitwise, not to a tolerance: the recomputation runs the same kernels on the same inputs
    # with the RNG state checkpoint restores, and autograd accumulates in the same order
    loss_off, grads_off = _loss_and_grads(_net(False))
    loss_on, grads_on = _loss_and_grads(_net(True))
    assert torch.equal(loss_on, loss_off)
    assert set(grads_on) == set(grads_off)
    for name, grad in grads_off.items():
        assert grad is not None and grad.abs().max() > 0, name
        assert torch.equal(grads_on[name], grad), name


def test_dropout_equality_rests_on_checkpoint_restoring_the_rng(monkeypatch):
    # without the restored RNG state the recomputed dropout draws other masks
    _, grads_off = _loss_and_grads(_net(False))
    no_rng = functools.partial(torch_checkpoint.checkpoint, preserve_rng_state=False)
    monkeypatch.setattr(unet_module, "checkpoint", no_rng)
    _, grads_on = _loss_and_grads(_net(True))
    assert any(not torch.equal(grads_on[n], g) for n, g in grads_off.items())


def test_checkpoints_load_with_checkpointing_on_or_off():
    on, off = build_unet("small", 6, 32, True), build_unet("small", 6, 32, False)
    assert all(b.recompute for b in on.modules() if isinstance(b, Recomputable))
    assert list(on.state_dict()) == list(off.state_dict())
    off.load_state_dict(on.state_dict())  # strict: the same keys and shapes, nothing extra
    on.load_state_dict(off.state_dict())


def test_only_a_training_forward_with_grad_recomputes(monkeypatch):
    calls = []
    counting = functools.partial(_counting_checkpoint, calls)
    monkeypatch.setattr(unet_module, "checkpoint", counting)
    net = _net(True)
    blocks = sum(isinstance(b, Recomputable) for b in net.modules())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0, 999])
    net.eval()
    net(x, t)
    with torch.no_grad():
        net.train()(x, t)
    assert calls == []  # sampling (no_grad) and evaluation (eval mode) run as before
    net.train()(x, t).sum().backward()
    assert len(calls) == blocks > 10


def _counting_checkpoint(calls, fn, *args, **kwargs):
    calls.append(fn)
    assert kwargs["use_reentrant"] is False  # what ZeRO-3's partitioned parameters need
    return torch_checkpoint.checkpoint(fn, *args, **kwargs)


def test_checkpointing_keeps_less_for_the_backward():
    # counted, not sampled from RSS: the same numbers on every run, whatever the load
    x, t = torch.randn(4, 3, 16, 16), torch.randint(0, 1000, (4,))
    counts = {}
    for on in (False, True, False):
        net = build_unet("tiny", 3, 16, on)
        counts.setdefault(on, []).append(step_memory(lambda n=net: (n(x, t) - x).square().mean()))
    off, on = counts[False][0], counts[True][0]
    assert counts[False][0] == counts[False][1]  # deterministic
    assert on["peak_bytes"] < 0.6 * off["peak_bytes"], (on, off)
    assert on["saved_tensors"] < off["saved_tensors"] / 4 and on["saved_bytes"] < off["saved_bytes"]


# Training under DeepSpeed, through the real loop (tests/engine/test_train_cpu.py's helpers)


@pytest.mark.slow
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_checkpointed_smoke_run_resumes_bitwise_as_the_uninterrupted_one(compiled, tmp_path):
    steps = [
        "trainer.max_steps=3",
        "trainer.ckpt_every_steps=1",
        "trainer.log_every_steps=1",
        "model.activation_checkpointing=true",
        f"trainer.compile={str(compiled).lower()}",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(smoke_config("ddpm", *steps), straight)
    train(smoke_config("ddpm", *steps, "trainer.max_steps=2"), split)
    train(smoke_config("ddpm", *steps), split)  # resumes from step 2
    a, b = weights(straight, 3, "unet"), weights(split, 3, "unet")
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume"
    if not compiled:  # eager, the lever off trains the same weights; inductor's fusions of the
        # recomputed graph differ in round-off (3e-8 after 3 steps, measured), so not compiled
        plain = tmp_path / "plain"
        train(smoke_config("ddpm", *steps, "model.activation_checkpointing=false"), plain)
        c = weights(plain, 3, "unet")
        for name in a:
            assert torch.equal(a[name], c[name]), f"{name} differs from the run without it"


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_checkpointed_steps_under_zero_match_the_plain_ones(zero, tmp_path):
    # ZeRO-3 gathers partitioned weights in module hooks, which the recomputation runs again
    opts = [f"deepspeed={zero}", "deepspeed.unsharded_at_one_rank=false", "trainer.max_steps=2",
            "trainer.ckpt_every_steps=2", "trainer.log_every_steps=1"]  # fmt: skip
    runs = {on: tmp_path / on for on in ("true", "false")}
    for on, run in runs.items():
        train(smoke_config("ddpm", *opts, f"model.activation_checkpointing={on}"), run)

    def losses_and_ema(run):
        losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").open()]
        ckpt = checkpoint_path(checkpoint_dir(run), 2) / rank_state_file(0)
        return losses, torch.load(ckpt, weights_only=True)["task"]["ema"]

    (losses_on, ema_on), (losses_off, ema_off) = map(losses_and_ema, runs.values())
    assert json.loads((runs["true"] / "run.json").read_text())["zero_stage"] == int(zero[-1])
    assert len(losses_on) == 2 and losses_on == losses_off
    for name, value in ema_off.items():
        assert torch.equal(ema_on[name], value), name
