"""DeepSpeed engines from typed config: the only place that calls deepspeed.initialize."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import nn

from hpcgen.config import ConfigError, DeepSpeedConfig
from hpcgen.engine.choices import LR_SCHEDULES, OPTIMIZERS, PRECISIONS

# lr_factor's two branches: a schedule added to LR_SCHEDULES fails to unpack here until it has one
CONSTANT, COSINE = LR_SCHEDULES


def ds_config(cfg: DeepSpeedConfig, batch_per_gpu: int, world_size: int) -> dict[str, Any]:
    """DeepSpeed's JSON config; batch_per_gpu x accumulation x world size = global batch."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": batch_per_gpu,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "train_batch_size": batch_per_gpu * cfg.grad_accum_steps * world_size,
        "zero_optimization": {"stage": cfg.zero_stage},
        "steps_per_print": 1 << 30,  # hpcgen logs; keep DeepSpeed's own step log quiet
        "wall_clock_breakdown": False,
    }
    # always written: DeepSpeed's default is 1.0, so a missing key clips every step (stage 0:
    # _norm_and_clip clips, to log the norm before clipping as ZeRO does)
    config["gradient_clipping"] = cfg.grad_clip if cfg.zero_stage > 0 else 0.0
    if cfg.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif cfg.precision == "fp16":
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    return config


def resolve_zero_stage(
    cfg: DeepSpeedConfig, world_size: int, saved_stage: int | None
) -> tuple[int, str | None]:
    """The ZeRO stage this job runs, and a line saying why when it is not cfg.zero_stage.

    A resume keeps the stage its checkpoint was written with (DeepSpeed cannot load one
    stage's optimizer files into another; a stage-0 checkpoint loads at any number of ranks).
    A fresh run on one rank takes stage 0 when cfg.unsharded_at_one_rank: there is nothing to
    partition, and ZeRO's flat buffers, bucket copies and all-reduce only cost time."""
    if saved_stage is not None:
        if saved_stage == cfg.zero_stage:
            return saved_stage, None
        if saved_stage == 0:
            why = (
                "it was started unsharded on one rank; a ZeRO run needs a fresh run directory"
                if world_size > 1
                else "one rank shards nothing"
            )
        else:
            why = "DeepSpeed loads a checkpoint only into the stage that wrote it"
        return saved_stage, (
            f"ZeRO stage {saved_stage} on {world_size} rank(s), the stage the checkpoint was "
            f"written with, not deepspeed.zero_stage={cfg.zero_stage}: {why}"
        )
    if world_size == 1 and cfg.unsharded_at_one_rank and cfg.zero_stage > 0:
        return 0, (
            f"one rank shards nothing: DeepSpeed stage 0 instead of deepspeed.zero_stage="
            f"{cfg.zero_stage} (no flat partitions, no gradient all-reduce); "
            "deepspeed.unsharded_at_one_rank=false keeps ZeRO"
        )
    return cfg.zero_stage, None


def check_precision(cfg: DeepSpeedConfig, cuda: bool) -> None:
    if cfg.precision == "fp16" and not cuda:
        raise ConfigError(
            "deepspeed.precision=fp16 needs a GPU (DeepSpeed's CPU accelerator has no fp16 "
            "support): use deepspeed.precision=fp32 or bf16 on the CPU"
        )


def make_engine(
    model: nn.Module,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    cfg: DeepSpeedConfig,
    batch_per_gpu: int,
    world_size: int,
) -> Any:
    """Wrap a plain module in a DeepSpeed engine with torch's AdamW or Adam (no compiled op
    needed) and the learning-rate schedule (warm-up, cosine), which DeepSpeed steps and saves."""
    import deepspeed

    # DeepSpeed casts parameters to bf16/fp16 but not buffers (BatchNorm statistics): cast both
    model = model.to(compute_dtype(cfg))
    kind = getattr(torch.optim, OPTIMIZERS[cfg.optimizer])
    optimizer = kind(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
    schedule = None
    if cfg.warmup_steps > 0 or cfg.lr_schedule != CONSTANT:
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=ds_config(cfg, batch_per_gpu, world_size),
    )
    if cfg.zero_stage == 0:
        optimizer.register_step_pre_hook(partial(_norm_and_clip, max_norm=cfg.grad_clip))
        # one rank: the all-reduce has nothing to average, but DeepSpeed would still flatten
        # every gradient into buckets, reduce them and copy them back each step
        if world_size == 1:
            engine.enable_backward_allreduce = False
    return engine


def _norm_and_clip(optimizer: torch.optim.Optimizer, args, kwargs, max_norm: float) -> None:
    """Stage 0's gradient norm for the logs (DeepSpeed computes one under ZeRO only; it reads
    `_global_grad_norm` off the optimizer after the step) and its clipping: the norm before
    clipping, as ZeRO reports it."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if max_norm > 0:
        optimizer._global_grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        optimizer._global_grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])


def lr_factor(step: int, cfg: DeepSpeedConfig) -> float:
    """The learning rate of optimizer step `step` (0-based) as a fraction of the peak:
    linear warm-up to 1, then constant or a half-cosine down to min_lr_ratio at decay_steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == CONSTANT:
        return 1.0
    decay_steps = cfg.decay_steps or cfg.warmup_steps + 1
    progress = min(1.0, (step - cfg.warmup_steps) / max(decay_steps - cfg.warmup_steps, 1))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def compute_dtype(cfg: DeepSpeedConfig) -> torch.dtype:
    return getattr(torch, PRECISIONS[cfg.precision])
