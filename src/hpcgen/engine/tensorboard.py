"""TensorBoard scalars and sample grids through torch's SummaryWriter (logger.tensorboard=true).

Rank 0 only. A resumed run passes its checkpoint's step as `purge_step`, so TensorBoard drops
the events that a preempted attempt logged after that checkpoint (as metrics.jsonl does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hpcgen.engine.metric_groups import tensorboard_tag


class TensorBoard:
    """A no-op unless enabled on rank 0."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int = 0) -> None:
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.dir = run_dir / "tensorboard"
            # the resumed run logs from resume_step + 1 on: drop an earlier attempt's events there
            purge = resume_step + 1 if resume_step else None
            self.writer = SummaryWriter(str(self.dir), purge_step=purge)

    def scalars(self, metrics: dict[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            tag = tensorboard_tag(key)  # None: the step and time axes
            if tag is not None and isinstance(value, (int, float)):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def image(self, name: str, grid: torch.Tensor, step: int) -> None:
        """One image (3, H, W) in [0, 1], e.g. the sample grid the run writes as a PNG."""
        if self.writer is None:
            return
        self.writer.add_image(name, grid.float().clamp(0, 1), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
