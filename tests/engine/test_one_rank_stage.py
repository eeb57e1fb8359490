"""One rank shards nothing: DeepSpeed's stage 0 there, the same updates as plain AdamW."""

from __future__ import annotations

import copy

import pytest
import torch

from hpcgen.config import DeepSpeedConfig
from hpcgen.engine.deepspeed_engine import make_engine, resolve_zero_stage
from hpcgen.engine.distributed import detect_layout, init_distributed
from hpcgen.models.unet import build_unet


def test_a_fresh_one_rank_run_takes_stage_0_and_a_resume_keeps_its_checkpoints_stage():
    zero2 = DeepSpeedConfig(zero_stage=2)
    stage, why = resolve_zero_stage(zero2, world_size=1, saved_stage=None)
    assert stage == 0 and "one rank shards nothing" in why and "unsharded_at_one_rank=false" in why
    assert resolve_zero_stage(zero2, world_size=2, saved_stage=None) == (2, None)
    kept = DeepSpeedConfig(zero_stage=2, unsharded_at_one_rank=False)
    assert resolve_zero_stage(kept, world_size=1, saved_stage=None) == (2, None)
    assert resolve_zero_stage(DeepSpeedConfig(zero_stage=0), 1, None) == (0, None)
    # a run started on one rank, requeued onto two: its stage-0 files load at any world size
    stage, why = resolve_zero_stage(zero2, world_size=2, saved_stage=0)
    assert stage == 0 and "started unsharded on one rank" in why and "fresh run" in why
    # a ZeRO-2 run of two ranks requeued onto one: stays ZeRO-2 (through the universal format)
    stage, why = resolve_zero_stage(zero2, world_size=1, saved_stage=2)
    assert stage == 2 and why is None
    stage, why = resolve_zero_stage(DeepSpeedConfig(zero_stage=3), 2, saved_stage=2)
    assert stage == 2 and "only into the stage that wrote it" in why


@pytest.mark.parametrize("accumulation, clip", [(1, 0.0), (2, 0.0), (1, 0.01)])
def test_stage_0_on_one_rank_updates_exactly_as_plain_adamw(accumulation, clip):
    """No all-reduce, no flat buffers: DeepSpeed's step is torch's AdamW step, bit for bit, and
    the logged gradient norm is the one before clipping (as ZeRO logs it)."""
    init_distributed(detect_layout())
    torch.manual_seed(0)
    net = build_unet("tiny", 3, 16)
    plain = copy.deepcopy(net)
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01)
    cfg = DeepSpeedConfig(zero_stage=0, grad_accum_steps=accumulation, grad_clip=clip)
    engine = make_engine(copy.deepcopy(net), 1e-3, (0.9, 0.99), 0.01, cfg, 4, 1)
    assert engine.enable_backward_allreduce is False and engine.zero_optimization_stage() == 0
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        batches = [torch.randn(4, 3, 16, 16, generator=gen) for _ in range(accumulation)]
        t = [torch.randint(0, 1000, (4,), generator=gen) for _ in range(accumulation)]
        for x, ts in zip(batches, t, strict=True):
            ((plain(x, ts) - x).square().mean() / accumulation).backward()
            loss = (engine(x, ts) - x).square().mean()
            engine.backward(loss)
            engine.step()
        norm = torch.nn.utils.get_total_norm([p.grad for p in plain.parameters()])
        if clip:
            assert norm > clip, "the clip bites"
            torch.nn.utils.clip_grad_norm_(plain.parameters(), clip)
        assert torch.equal(engine.get_global_grad_norm(), norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    for (name, a), b in zip(plain.state_dict().items(), engine.module.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(a, b), name


@pytest.mark.parametrize("stage", [1, 2])
def test_grad_clip_0_means_no_clipping_under_zero_too(stage):
    """DeepSpeed clips at 1.0 when its config has no gradient_clipping: every run did, while
    deepspeed.grad_clip=0 said it disables clipping."""
    init_distributed(detect_layout())
    net = build_unet("tiny", 3, 16)
    for clip in (0.0, 0.5):
        cfg = DeepSpeedConfig(zero_stage=stage, grad_clip=clip)
        engine = make_engine(copy.deepcopy(net), 1e-3, (0.9, 0.99), 0.0, cfg, 4, 1)
        assert engine.gradient_clipping() == clip
