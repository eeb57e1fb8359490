"""DeepSpeed engines from typed config: the only place that calls deepspeed.initialize."""

from __future__ import annotations

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
    needed) and, with deepspeed.warmup_steps, a linear warm-up that DeepSpeed steps and saves."""
    import deepspeed

    # DeepSpeed casts parameters to bf16/fp16 but not buffers (BatchNorm statistics): cast both
    model = model.to(compute_dtype(cfg))
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = kind(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
    warmup = cfg.warmup_steps
    schedule = (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        if warmup > 0
        else None
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=ds_config(cfg, batch_per_gpu, world_size),
    )
    return engine


def compute_dtype(cfg: DeepSpeedConfig) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
