"""train(cfg, run_dir): build, restore, train, close. One job, any number of ranks."""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from hpcgen.config import ConfigError, TrainConfig
from hpcgen.console import StepProgress
from hpcgen.data.shards import ensure_shards, first_images
from hpcgen.data.stream import ShardStream, real_images, to_unit_range
from hpcgen.engine.checkpoint import CheckpointManager, NoSpaceError, saved_zero_stage
from hpcgen.engine.deepspeed_engine import check_precision, resolve_zero_stage
from hpcgen.engine.disk import estimated_bytes, is_no_space
from hpcgen.engine.distributed import (
    RankLayout,
    detect_layout,
    init_distributed,
    mean_over_ranks,
    print0,
)
from hpcgen.engine.eval_queue import EvalQueue
from hpcgen.engine.interval_log import engine_stats, log_interval
from hpcgen.engine.lease import LeaseLost, RunBusyError, RunLease, displaced
from hpcgen.engine.peer_watch import lost_peer, post_failure
from hpcgen.engine.preemption import DISPLACED, Preempted, PreemptionGuard
from hpcgen.engine.run_dir import checkpoint_dir, sample_grid_path
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
    device = init_distributed(layout, cfg.trainer.peer_timeout_s)
    lease = hold_run_dir(run_dir, layout, cfg.trainer.lease_heartbeat_s)  # before any write
    try:
        return _train(cfg, run_dir, layout, device, overrides, signal_delay_s, lease)
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


class TrainState:
    """Everything a checkpoint keeps beside the engines, registered once by name: the step and
    image counters, and named objects with state_dict / load_state_dict (the data stream's
    position, the task's EMA, noise generator and counters). New state is a new name here."""

    def __init__(self, **parts: Any) -> None:
        self.step, self.images_seen, self.parts = 0, 0, parts

    def state_dict(self) -> dict[str, Any]:
        own = {"step": self.step, "images_seen": self.images_seen}
        return own | {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.images_seen = state["step"], state["images_seen"]
        for name, part in self.parts.items():
            part.load_state_dict(state[name])


class Diverged(RuntimeError):
    """The logged losses are NaN or infinite; the message says where and what to change."""


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


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    layout: RankLayout,
    device: torch.device,
    overrides: list[str] | None,
    signal_delay_s: float | None,
    lease: RunLease | None = None,
) -> dict[str, Any]:
    job = build(cfg, run_dir, layout, device, signal_delay_s)
    job.lease = lease
    job.evals = EvalQueue(run_dir, cfg, layout.is_main)
    latest, from_world_size = restore(job)
    job.record.truncate_metrics(after_step=job.state.step)  # rows logged after it would repeat
    job.tb = TensorBoard(run_dir, cfg.logger.tensorboard and layout.is_main, job.state.step)
    record_start(job, overrides, latest, from_world_size)
    last: dict[str, float] = dict(job.record.data.get("last_losses") or {})  # a finished run
    try:
        last = train_loop(job, last)
    except (Preempted, LeaseLost):  # displaced: run.json is the new holder's now
        raise
    except BaseException as caught:
        err = record_failure(job, caught)
        if err is caught:
            raise
        raise err from None  # one line: the chain is only the OS's echoes
    finally:
        job.stream.close()
        job.tb.close()
        job.evals.close()  # submissions in flight, never the evaluations themselves
    completed = record_completion(job, last)
    job.evals.run_queued()  # without SLURM: the queued evaluations, now that training is over
    return completed


def build(
    cfg: TrainConfig,
    run_dir: Path,
    layout: RankLayout,
    device: torch.device,
    signal_delay_s: float | None,
) -> Job:
    """The run record, the data stream, the task (networks, engines, EMA) and the checkpointer."""
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
        estimated_bytes(task.parameters, layout.world_size),
        zero_stage=cfg.deepspeed.zero_stage,
    )
    ckpts.warn_if_low_space()
    global_batch = cfg.trainer.batch_per_gpu * cfg.deepspeed.grad_accum_steps * layout.world_size
    state = TrainState(stream=stream, task=task)
    return Job(
        cfg, run_dir, layout, record, root, stream, task, ckpts, state, global_batch, signal_delay_s
    )


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


def record_start(
    job: Job, overrides: list[str] | None, latest: Path | None, from_world_size: int | None
) -> None:
    """run.json: what runs here, and a started or resumed event."""
    cfg, record, world_size = job.cfg, job.record, job.layout.world_size
    record.update(
        status="running",
        model=cfg.model.name,
        preset=cfg.model.preset,
        world_size=world_size,
        zero_stage=cfg.deepspeed.zero_stage,
        parameters=job.task.parameters,
        step=job.state.step,
        max_steps=cfg.trainer.max_steps,
        images_seen=job.state.images_seen,
        preemptions=record.data.get("preemptions", 0),
        git_revision=git_revision(),
        slurm_job_id=slurm_job_id(),
        overrides=overrides or [],
        run_dir=str(job.run_dir),
        data_root=str(job.data_root),
        global_batch=job.global_batch,
        started=time.time(),
    )
    record.add_event(
        "resumed" if latest is not None else "started",
        step=job.state.step,
        checkpoint=latest.name if latest is not None else None,
        slurm_job_id=slurm_job_id(),
        world_size=world_size,
        from_world_size=from_world_size,
    )


def train_loop(job: Job, last: dict[str, float]) -> dict[str, float]:
    """Steps to trainer.max_steps; returns the last losses (the mean over ranks when logged)."""
    cfg, trainer, state = job.cfg, job.cfg.trainer, job.state
    progress = StepProgress(trainer.max_steps, state.step, job.layout.is_main)
    try:
        with PreemptionGuard(job.lease) as guard:
            busy_s, tick_step = 0.0, state.step  # img/s: data + training, not sampling/saving
            first_step = state.step
            while state.step < trainer.max_steps:
                # Train one step.
                start = time.perf_counter()
                batches = [job.stream.next_batch() for _ in range(cfg.deepspeed.grad_accum_steps)]
                last = job.task.train_step(batches)
                busy_s += time.perf_counter() - start
                if trainer.compile and state.step == first_step:  # this process compiled here
                    report_compile(job, time.perf_counter() - start)
                state.step, state.images_seen = state.step + 1, state.images_seen + job.global_batch
                step, done = state.step, state.step == trainer.max_steps
                progress.update(step, last)
                # Agree on a preemption signal, and that the run directory is still this
                # job's (all ranks, at a step boundary, before this step writes anything).
                intervals = (trainer.log_every_steps, trainer.sample_every_steps,
                             trainer.ckpt_every_steps)  # fmt: skip
                writes = done or any(step % n == 0 for n in intervals)
                check = step % trainer.preempt_check_every_steps == 0 or writes
                decision = guard.agreed(before_writes=writes) if check else 0
                if decision == DISPLACED:
                    raise displaced(job.lease, job.run_dir)
                # Log, sample, checkpoint.
                if step % trainer.log_every_steps == 0 or done or decision:
                    last = mean_over_ranks(last)  # the losses of all ranks, not rank 0's alone
                    rate = (step - tick_step) * job.global_batch / max(busy_s, 1e-9)
                    busy_s, tick_step = 0.0, step
                    log_interval(
                        job.record, step, trainer.max_steps, state.images_seen, rate, last,
                        job.stream.skipped, engine_stats(job.task.engines), job.tb,
                    )  # fmt: skip
                    check_finite(job, step, last)  # the same means on every rank
                if step % trainer.sample_every_steps == 0 or done:
                    save_samples(job.task, cfg, job.run_dir, step, job.layout.is_main, job.tb)
                if step % trainer.ckpt_every_steps == 0 or done or decision:
                    path, save_s = save_checkpoint(job)
                # Leave for the requeue (SIGUSR2) or the stop (SIGTERM).
                if decision and not done:
                    job.record.update(
                        status="preempted",
                        preemptions=job.record.data["preemptions"] + 1,
                        ended=time.time(),
                    )
                    job.record.add_event(
                        "preempted", step=step, checkpoint=path.name, save_s=save_s
                    )
                    guard.leave(decision, job.layout.rank)
    finally:
        progress.close()
    return last


def save_checkpoint(job: Job) -> tuple[Path, float]:
    """A committed checkpoint of this step (collective); warns when it takes too long for
    SLURM's signal-to-kill window."""
    save_start = time.perf_counter()
    path = job.ckpts.save(job.state.step, job.task.engines, job.state.state_dict())
    save_s = time.perf_counter() - save_start
    job.record.update(last_checkpoint=str(path), last_save_s=save_s)
    if job.evals is not None:
        job.evals.committed(path)  # its evaluation, as its own job: the loop never waits
    delay = job.signal_delay_s
    if delay and save_s > delay / 2:
        print0(
            f"WARNING: saving took {save_s:.1f}s, more than half of the {delay:.0f}s between "
            "SLURM's signal and its kill: raise hydra.launcher.signal_delay_s"
        )
    return path, save_s


def report_compile(job: Job, seconds: float) -> None:
    """trainer.compile: the first step of a process compiles the networks; say how long it took
    (run.json: compile_first_step_s), apart from the steps that follow."""
    print0(
        f"[hpcgen] trainer.compile: the first step took {seconds:.1f} s (compiling the "
        "networks); the img/s of the first logged interval includes it"
    )
    job.record.update(compile_first_step_s=round(seconds, 3))


def check_finite(job: Job, step: int, losses: dict[str, float]) -> None:
    """Stop a run whose logged losses are NaN or infinite: every later step would only train
    NaN weights (the optimizer applies NaN gradients) and its checkpoints would keep them."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if not bad:
        return
    committed = job.ckpts.committed()
    where = (
        f"the last committed checkpoint is {committed[-1].name} (it may hold the divergence "
        f"already if it is after step {step - job.cfg.trainer.log_every_steps})"
        if committed
        else "no checkpoint was committed"
    )
    raise Diverged(
        f"the loss is not finite at step {step} ({', '.join(f'{k}={v}' for k, v in bad.items())})"
        f": {where}. Lower the learning rate, set deepspeed.grad_clip (e.g. 1.0), or check the "
        "data and the schedule, then resume or start again"
    )


def record_failure(job: Job, caught: BaseException) -> BaseException:
    """run.json says failed with the error; a full disk becomes one NoSpaceError line; a
    collective broken by a peer's end names that peer (and its error); this rank's own error
    goes to the peers (peer_watch), which may be waiting on this rank in a collective."""
    err = lost = lost_peer(caught)
    if lost is not None and (lost.peer_error or "").startswith(f"{NoSpaceError.__name__}: "):
        err = NoSpaceError(f"{lost.where}: {lost.peer_error.split(': ', 1)[1]}")  # one line
    elif lost is None:
        err = caught
        if is_no_space(caught) and not isinstance(caught, NoSpaceError):  # a line, run.json
            where = getattr(caught, "filename", None) or f"into {job.run_dir}"
            resume = job.ckpts.resume_note()
            err = NoSpaceError(f"no space left writing {where} ({caught}): {resume}")
        post_failure(err)
    try:
        error = f"{type(err).__name__}: {err}"  # off rank 0 the record is not kept: no data
        job.record.update(status="failed", error=error, ended=time.time())
        job.record.add_event("failed", step=job.state.step, error=error)
    except OSError as write_err:  # e.g. the disk is still full: the error itself matters
        print0(f"WARNING: could not record the failure in {job.run_dir / 'run.json'}: {write_err}")
    return err


def record_completion(job: Job, last: dict[str, float]) -> dict[str, Any]:
    step = job.state.step
    job.record.update(
        status="completed",
        step=step,
        images_seen=job.state.images_seen,
        last_losses=last,
        skipped_samples=job.stream.skipped,
        ended=time.time(),
    )
    job.record.add_event("completed", step=step)
    return {"run_dir": str(job.run_dir), "step": step, "last_losses": last}
