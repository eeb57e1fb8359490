"""One training job's parts and how they come to be: the run directory's lease, the built job
(run record, data stream, task, checkpointer) and its restore from the latest committed
checkpoint. Everything a checkpoint keeps is registered once, in TrainState."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpcgen.config import ConfigError, TrainConfig
from hpcgen.data.shards import ensure_shards, first_images
from hpcgen.data.stream import ShardStream, real_images, to_unit_range
from hpcgen.engine.checkpoint import FROM_RANK0, CheckpointManager, saved_zero_stage
from hpcgen.engine.deepspeed_engine import check_precision, resolve_zero_stage
from hpcgen.engine.disk import estimated_bytes
from hpcgen.engine.distributed import RankLayout, mean_over_ranks, print0
from hpcgen.engine.eval_queue import EvalQueue
from hpcgen.engine.lease import RunBusyError, RunLease
from hpcgen.engine.run_dir import checkpoint_dir
from hpcgen.engine.run_record import RunRecord
from hpcgen.engine.tasks import build_task
from hpcgen.engine.tensorboard import TensorBoard
from hpcgen.seeds import (
    network_seed,
    noise_seed_after_resize,
    rank_seed,
    rank_seed_after_resize,
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def hold_run_dir(run_dir: Path, layout: RankLayout, heartbeat_s: float) -> RunLease | None:
    """Rank 0 takes the run directory's lease; every rank stops when a live job holds it."""
    lease, refused = (RunLease(run_dir, heartbeat_s), None) if layout.is_main else (None, None)
    if lease is not None:
        try:
            lease.acquire()
        except Exception as err:  # busy, or the directory cannot be written: no rank goes on
            refused = err
    if mean_over_ranks({"refused": float(refused is not None)})["refused"] > 0:
        raise refused or RunBusyError(f"rank 0 could not take {run_dir} (its log says why)")
    return lease


class TrainState:
    """Everything a checkpoint keeps beside the engines, registered once by name: the step and
    image counters, and named objects with state_dict / load_state_dict (the data stream's
    position, the task's EMA, noise generator and counters). New state is a new name here.

    A part's `replicated` keys (the EMA: equal on every rank) are kept by rank 0 only; the
    other ranks' state names them under FROM_RANK0 and the checkpointer fills them in from
    rank 0's file at load. At 512 ranks of a 553M-parameter U-Net that is 2.2 GB a checkpoint
    instead of 1.1 TB."""

    def __init__(self, rank: int = 0, **parts: Any) -> None:
        self.step, self.images_seen, self.rank, self.parts = 0, 0, rank, parts

    def state_dict(self) -> dict[str, Any]:
        own: dict[str, Any] = {"step": self.step, "images_seen": self.images_seen}
        shared: dict[str, list[str]] = {}
        for name, part in self.parts.items():
            own[name] = part.state_dict()
            if self.rank != 0 and getattr(part, "replicated", ()):
                shared[name] = [k for k in part.replicated if own[name].pop(k, None) is not None]
        return own | ({FROM_RANK0: shared} if shared else {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.images_seen = state["step"], state["images_seen"]
        for name, part in self.parts.items():
            part.load_state_dict(state[name])


@dataclass
class Job:
    """What one training job holds while it runs."""

    cfg: TrainConfig
    run_dir: Path
    layout: RankLayout
    record: RunRecord
    data_root: Path
    stream: ShardStream
    task: Any
    ckpts: CheckpointManager
    state: TrainState
    global_batch: int
    signal_delay_s: float | None
    tb: TensorBoard | None = None
    lease: RunLease | None = None  # rank 0's
    evals: EvalQueue | None = None  # eval.during_training's submitter (rank 0's does the work)


def build(
    cfg: TrainConfig,
    run_dir: Path,
    layout: RankLayout,
    device: torch.device,
    signal_delay_s: float | None,
    lease: RunLease | None = None,
) -> Job:
    """The run record, the data stream, the task (networks, engines, EMA), the checkpointer and
    the evaluation submitter."""
    check_precision(cfg.deepspeed, device.type == "cuda")
    cfg.trainer.resolve_batch(layout.world_size, cfg.deepspeed.grad_accum_steps)
    seed_everything(rank_seed(cfg.seed, layout.rank))
    record = RunRecord(run_dir, enabled=layout.is_main)
    print0(
        f"[hpcgen] {cfg.model.name} on {layout.world_size} rank(s) ({layout.source}, "
        f"{device.type}), run dir {run_dir}"
    )
    root, manifest, stream = open_stream(cfg, layout)
    saved_stage = saved_zero_stage(checkpoint_dir(run_dir), legacy=cfg.deepspeed.zero_stage)
    cfg.deepspeed.zero_stage, why = resolve_zero_stage(
        cfg.deepspeed, layout.world_size, saved_stage
    )
    if why:
        print0(f"[hpcgen] {why}")
    # every rank builds the same networks, buffers included (DeepSpeed broadcasts parameters
    # only, and a checkpoint restores rank 0's buffers everywhere); the per-rank streams go on
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(network_seed(cfg.seed))
        task = build_task(cfg, layout.rank, layout.world_size)
    if cfg.model.name == "gan" and layout.is_main and not (run_dir / "augment.png").is_file():
        write_augmentation_figure(root, manifest, run_dir / "augment.png")
    ckpts = CheckpointManager(
        run_dir,
        layout.rank,
        layout.world_size,
        cfg.trainer.keep_last_ckpts,
        cfg.trainer.ckpt_milestone_every_steps,
        estimated_bytes(task.parameters),
        zero_stage=cfg.deepspeed.zero_stage,
    )
    ckpts.warn_if_low_space()
    global_batch = cfg.trainer.batch_per_gpu * cfg.deepspeed.grad_accum_steps * layout.world_size
    state = TrainState(layout.rank, stream=stream, task=task)
    job = Job(
        cfg, run_dir, layout, record, root, stream, task, ckpts, state, global_batch, signal_delay_s
    )
    job.lease, job.evals = lease, EvalQueue(run_dir, cfg, layout.is_main)
    return job


def open_stream(cfg: TrainConfig, layout: RankLayout) -> tuple[Path, dict, ShardStream]:
    """The shards (prepared on first use) and this rank's stream over its share of them."""
    root, manifest = ensure_shards(cfg.data)
    if manifest["resolution"] != cfg.data.resolution:
        raise ConfigError(
            f"shards in {root} are {manifest['resolution']}px but "
            f"data.resolution={cfg.data.resolution}"
        )
    readers = layout.world_size * max(cfg.data.num_workers, 1)
    shards, limits = first_images(root, manifest, cfg.data.max_images, readers)
    stream = ShardStream(
        shards,
        cfg.trainer.batch_per_gpu,
        layout.rank,
        layout.world_size,
        cfg.seed,
        cfg.data.shuffle_buffer,
        cfg.data.num_workers,
        cfg.data.hflip,
        limits,
    )
    return root, manifest, stream


def write_augmentation_figure(root: Path, manifest: dict, path: Path) -> None:
    """The report's Figure 7 for this data: one real image under each ADA augmentation
    (read apart from the training stream, so the data position is untouched)."""
    from hpcgen.gan.augment import augmentation_figure

    image = to_unit_range(real_images(root, manifest, 1)[0])
    augmentation_figure(image, path)
    print0(f"[hpcgen] ADA's augmentations of one training image: {path}")


def restore(job: Job) -> tuple[Path | None, int | None]:
    """The newest committed checkpoint that verifies into the engines and job.state, or a fresh
    start; returns (checkpoint, the world size it was saved by when that differs)."""
    cfg, rank = job.cfg, job.layout.rank
    latest = job.ckpts.find_latest(cfg.trainer.allow_fresh_start_on_corrupt)
    if latest is None:
        return None, None
    saved = job.ckpts.load(latest, job.task.engines)
    job.state.load_state_dict(saved)
    from_world_size = saved.get("world_size_changed_from")
    if from_world_size:  # rank 0's state on every rank: reseed each rank's streams
        step = job.state.step
        seed_everything(rank_seed_after_resize(cfg.seed, rank, step))
        job.task.generator.manual_seed(noise_seed_after_resize(cfg.seed, rank, step))
    print0(f"[hpcgen] resumed from {latest} at step {job.state.step}")
    return latest, from_world_size
