"""train(cfg, run_dir): build, restore, train, close. One job, any number of ranks."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from hpcgen.config import ConfigError, TrainConfig
from hpcgen.console import StepProgress
from hpcgen.data.shards import ensure_shards, shard_paths
from hpcgen.data.stream import ShardStream, real_images, to_unit_range
from hpcgen.engine.checkpoint import CheckpointManager, NoSpaceError
from hpcgen.engine.deepspeed_engine import check_precision
from hpcgen.engine.disk import estimated_bytes, is_no_space
from hpcgen.engine.distributed import (
    RankLayout,
    detect_layout,
    init_distributed,
    mean_over_ranks,
    print0,
)
from hpcgen.engine.lease import RunBusyError, RunLease
from hpcgen.engine.preemption import Preempted, PreemptionGuard
from hpcgen.engine.run_dir import sample_grid_path
from hpcgen.engine.run_record import RunRecord, git_revision, slurm_job_id
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


def save_samples(
    task: Any, cfg: TrainConfig, run_dir: Path, step: int, is_main: bool, tb: TensorBoard
) -> Path:
    """A grid of samples from fixed seeds; every rank samples (ZeRO-3), rank 0 writes the PNG."""
    images = task.sample(cfg.model.num_samples, cfg.data.resolution, seed=cfg.seed)
    path = sample_grid_path(run_dir, step)
    if is_main:
        nrow = int(np.ceil(np.sqrt(images.shape[0])))
        grid = make_grid((images + 1) / 2, nrow=nrow, padding=1)  # (3, H', W') in [0, 1]
        tb.image("samples", grid, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")  # a kill mid-write leaves no half PNG
        save_image(grid, tmp, format="png")
        os.replace(tmp, path)
    return path


def write_augmentation_figure(root: Path, manifest: dict, path: Path) -> None:
    """The report's Figure 7 for this data: one real image under each ADA augmentation
    (read apart from the training stream, so the data position is untouched)."""
    from hpcgen.gan.augment import augmentation_figure

    image = to_unit_range(real_images(root, manifest, 1)[0])
    augmentation_figure(image, path)
    print0(f"[hpcgen] ADA's augmentations of one training image: {path}")


def train(
    cfg: TrainConfig,
    run_dir: Path,
    overrides: list[str] | None = None,
    signal_delay_s: float | None = None,
) -> dict[str, Any]:
    """Train one model to cfg.trainer.max_steps, resuming from the latest committed checkpoint.

    signal_delay_s: how long before the kill SLURM signals (the slurm launcher's setting); a
    checkpoint that takes longer than half of it draws a warning.
    """
    layout: RankLayout = detect_layout()
    device = init_distributed(layout)
    lease = hold_run_dir(run_dir, layout, cfg.trainer.lease_heartbeat_s)  # before any write
    try:
        return _train(cfg, run_dir, layout, device, overrides, signal_delay_s)
    finally:
        if lease is not None:
            lease.release()


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


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    layout: RankLayout,
    device: torch.device,
    overrides: list[str] | None,
    signal_delay_s: float | None,
) -> dict[str, Any]:
    check_precision(cfg.deepspeed, device.type == "cuda")
    cfg.trainer.resolve_batch(layout.world_size, cfg.deepspeed.grad_accum_steps)
    seed_everything(rank_seed(cfg.seed, layout.rank))
    record = RunRecord(run_dir, enabled=layout.is_main)
    print0(
        f"[hpcgen] {cfg.model.name} on {layout.world_size} rank(s) ({layout.source}, "
        f"{device.type}), run dir {run_dir}"
    )

    root, manifest = ensure_shards(cfg.data)
    if manifest["resolution"] != cfg.data.resolution:
        raise ConfigError(
            f"shards in {root} are {manifest['resolution']}px but "
            f"data.resolution={cfg.data.resolution}"
        )
    stream = ShardStream(
        shard_paths(root, manifest),
        cfg.trainer.batch_per_gpu,
        layout.rank,
        layout.world_size,
        cfg.seed,
        cfg.data.shuffle_buffer,
        cfg.data.num_workers,
        cfg.data.hflip,
    )
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
        estimated_bytes(task.parameters, layout.world_size),
    )
    ckpts.warn_if_low_space()

    step, images_seen, from_world_size = 0, 0, None
    latest = ckpts.find_latest(cfg.trainer.allow_fresh_start_on_corrupt)
    if latest is not None:
        state = ckpts.load(latest, task.engines)
        step, images_seen = state["step"], state["images_seen"]
        stream.load_state_dict(state["stream"])
        task.load_state_dict(state["task"])
        from_world_size = state.get("world_size_changed_from")
        if from_world_size:  # rank 0's state on every rank: reseed each rank's streams
            seed_everything(rank_seed_after_resize(cfg.seed, layout.rank, step))
            task.generator.manual_seed(noise_seed_after_resize(cfg.seed, layout.rank, step))
        print0(f"[hpcgen] resumed from {latest} at step {step}")
    record.truncate_metrics(after_step=step)  # rows logged after it would repeat
    tb = TensorBoard(run_dir, cfg.logger.tensorboard and layout.is_main, resume_step=step)
    global_batch = cfg.trainer.batch_per_gpu * cfg.deepspeed.grad_accum_steps * layout.world_size
    record.update(
        status="running",
        model=cfg.model.name,
        preset=cfg.model.preset,
        world_size=layout.world_size,
        parameters=task.parameters,
        step=step,
        max_steps=cfg.trainer.max_steps,
        images_seen=images_seen,
        preemptions=record.data.get("preemptions", 0),
        git_revision=git_revision(),
        slurm_job_id=slurm_job_id(),
        overrides=overrides or [],
        run_dir=str(run_dir),
        data_root=str(root),
        global_batch=global_batch,
        started=time.time(),
    )
    record.add_event(
        "resumed" if latest is not None else "started",
        step=step,
        checkpoint=latest.name if latest is not None else None,
        slurm_job_id=slurm_job_id(),
        world_size=layout.world_size,
        from_world_size=from_world_size,
    )

    last: dict[str, float] = dict(record.data.get("last_losses") or {})  # a finished run
    check_every = cfg.trainer.preempt_check_every_steps
    progress = StepProgress(cfg.trainer.max_steps, step, layout.is_main)
    try:
        with PreemptionGuard() as guard:
            busy_s, tick_step = 0.0, step  # img/s: data + training time, not sampling/saving
            while step < cfg.trainer.max_steps:
                start = time.perf_counter()
                batches = [stream.next_batch() for _ in range(cfg.deepspeed.grad_accum_steps)]
                last = task.train_step(batches)
                busy_s += time.perf_counter() - start
                step += 1
                images_seen += global_batch
                progress.update(step, last)
                done = step == cfg.trainer.max_steps
                decision = guard.agreed() if step % check_every == 0 or done else 0
                if step % cfg.trainer.log_every_steps == 0 or done or decision:
                    last = mean_over_ranks(last)  # the losses of all ranks, not rank 0's alone
                    rate = (step - tick_step) * global_batch / max(busy_s, 1e-9)
                    busy_s, tick_step = 0.0, step
                    log_interval(
                        record,
                        step,
                        cfg.trainer.max_steps,
                        images_seen,
                        rate,
                        last,
                        stream.skipped,
                        engine_stats(task.engines),
                        tb,
                    )
                if step % cfg.trainer.sample_every_steps == 0 or done:
                    save_samples(task, cfg, run_dir, step, layout.is_main, tb)
                if step % cfg.trainer.ckpt_every_steps == 0 or done or decision:
                    state = {
                        "step": step,
                        "images_seen": images_seen,
                        "stream": stream.state_dict(),
                        "task": task.state_dict(),
                    }
                    save_start = time.perf_counter()
                    path = ckpts.save(step, task.engines, state)
                    save_s = time.perf_counter() - save_start
                    record.update(last_checkpoint=str(path), last_save_s=save_s)
                    if signal_delay_s and save_s > signal_delay_s / 2:
                        print0(
                            f"WARNING: saving took {save_s:.1f}s, more than half of the "
                            f"{signal_delay_s:.0f}s between SLURM's signal and its kill: "
                            "raise hydra.launcher.signal_delay_s"
                        )
                if decision and not done:
                    record.update(
                        status="preempted",
                        preemptions=record.data["preemptions"] + 1,
                        ended=time.time(),
                    )
                    record.add_event("preempted", step=step, checkpoint=path.name, save_s=save_s)
                    guard.leave(decision, layout.rank)
    except Preempted:
        raise
    except BaseException as caught:
        err = caught
        if is_no_space(caught) and not isinstance(caught, NoSpaceError):  # a log line, run.json
            where = getattr(caught, "filename", None) or f"into {run_dir}"
            err = NoSpaceError(f"no space left writing {where} ({caught}): {ckpts.resume_note()}")
        try:
            record.update(status="failed", error=f"{type(err).__name__}: {err}", ended=time.time())
            record.add_event("failed", step=step, error=record.data["error"])
        except OSError as write_err:  # e.g. the disk is still full: the error itself matters
            print0(f"WARNING: could not record the failure in {run_dir / 'run.json'}: {write_err}")
        if err is caught:
            raise
        raise err from None  # one line: the chain is only the OS's echoes
    finally:
        progress.close()
        stream.close()
        tb.close()
    record.update(
        status="completed",
        step=step,
        images_seen=images_seen,
        last_losses=last,
        skipped_samples=stream.skipped,
        ended=time.time(),
    )
    record.add_event("completed", step=step)
    return {"run_dir": str(run_dir), "step": step, "last_losses": last}


def engine_stats(engines: dict[str, Any]) -> dict[str, float]:
    """Learning rate, gradient norm (DeepSpeed's, after clipping's measurement) and loss
    scale (fp16) per engine, and the peak memory of this process (GPU, else host RSS)."""
    import resource

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
