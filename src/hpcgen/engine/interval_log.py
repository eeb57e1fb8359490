"""What the loop logs at each interval: one metrics.jsonl row (and TensorBoard's scalars), one
log line, run.json's progress; and the engines' learning rates, gradient norms, loss scales
and the process's peak memory. Which chart each key belongs to: metric_groups.py."""

from __future__ import annotations

import resource
import time
from typing import Any

import torch

from hpcgen.engine.distributed import print0
from hpcgen.engine.run_record import RunRecord
from hpcgen.engine.tensorboard import TensorBoard


def engine_stats(engines: dict[str, Any]) -> dict[str, float]:
    """Learning rate, gradient norm (DeepSpeed's, after clipping's measurement) and loss
    scale (fp16) per engine, and the peak memory of this process (GPU, else host RSS)."""
    stats: dict[str, float] = {}
    for name, engine in engines.items():
        stats[f"lr_{name}"] = float(engine.get_lr()[0])
        norm = engine.get_global_grad_norm()
        if norm is not None:
            stats[f"grad_norm_{name}"] = float(norm)
        if engine.fp16_enabled():
            stats[f"loss_scale_{name}"] = float(engine.optimizer.cur_scale)
    if torch.cuda.is_available():
        stats["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    else:  # ru_maxrss is in KiB on Linux
        stats["max_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return stats


def log_interval(
    record: RunRecord,
    step: int,
    max_steps: int,
    images_seen: int,
    rate: float,
    losses: dict[str, float],
    skipped: int,
    stats: dict[str, float] | None = None,
    tb: TensorBoard | None = None,
) -> None:
    """One metrics.jsonl line (and TensorBoard scalars), one log line and run.json's progress
    (no-ops off rank 0)."""
    metrics = {
        "step": step,
        "kimg": images_seen / 1000,
        "images_per_s": rate,
        **losses,
        **(stats or {}),
        "skipped_samples": skipped,
        "time": time.time(),
    }
    record.log_metrics(metrics)
    if tb is not None:
        tb.scalars(metrics, step)
    text = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
    print0(
        f"[hpcgen] step {step}/{max_steps} kimg {images_seen / 1000:.2f} {rate:.1f} img/s {text}"
    )
    record.update(step=step, images_seen=images_seen, last_losses=losses)
