"""DeepSpeed engines from typed config: the only place that calls deepspeed.initialize."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from hpcgen.config import ConfigError, DeepSpeedConfig


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
    if cfg.grad_clip > 0:
        config["gradient_clipping"] = cfg.grad_clip
    if cfg.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif cfg.precision == "fp16":
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    return config


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
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = kind(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
    schedule = None
    if cfg.warmup_steps > 0 or cfg.lr_schedule != "constant":
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=ds_config(cfg, batch_per_gpu, world_size),
    )
    return engine


def lr_factor(step: int, cfg: DeepSpeedConfig) -> float:
    """The learning rate of optimizer step `step` (0-based) as a fraction of the peak:
    linear warm-up to 1, then constant or a half-cosine down to min_lr_ratio at decay_steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    decay_steps = cfg.decay_steps or cfg.warmup_steps + 1
    progress = min(1.0, (step - cfg.warmup_steps) / max(decay_steps - cfg.warmup_steps, 1))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def compute_dtype(cfg: DeepSpeedConfig) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
