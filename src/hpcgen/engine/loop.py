"""train(cfg, run_dir): build, restore, train, close. One job, any number of ranks."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.utils import make_grid, save_image

from hpcgen.config import TrainConfig, TrainerConfig
from hpcgen.engine.checkpoint import NoSpaceError
from hpcgen.engine.disk import is_no_space
from hpcgen.engine.distributed import detect_layout, init_distributed, mean_over_ranks, print0
from hpcgen.engine.interval_log import engine_stats, log_interval
from hpcgen.engine.job import Job, build, hold_run_dir, restore
from hpcgen.engine.lease import LeaseLost, displaced
from hpcgen.engine.peer_watch import lost_peer, post_failure
from hpcgen.engine.preemption import DISPLACED, Preempted, PreemptionGuard
from hpcgen.engine.run_dir import sample_grid_path
from hpcgen.engine.run_record import git_revision, slurm_job_id
from hpcgen.engine.tensorboard import TensorBoard
from hpcgen.engine.terminal import StepProgress


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
    layout = detect_layout()
    device = init_distributed(layout, cfg.trainer.peer_timeout_s)
    lease = hold_run_dir(run_dir, layout, cfg.trainer.lease_heartbeat_s)  # before any write
    try:
        job = build(cfg, run_dir, layout, device, signal_delay_s, lease)
        latest, from_world_size = restore(job)
        open_logs(job, overrides, latest, from_world_size)
        last = train_recorded(job)
        return close(job, last)
    finally:
        if lease is not None:
            lease.release()


class Diverged(RuntimeError):
    """The logged losses are NaN or infinite; the message says where and what to change."""


def open_logs(
    job: Job, overrides: list[str] | None, latest: Path | None, from_world_size: int | None
) -> None:
    """metrics.jsonl cut back to the restored step, TensorBoard from it, run.json's start."""
    job.record.truncate_metrics(after_step=job.state.step)  # rows logged after it would repeat
    job.tb = TensorBoard(
        job.run_dir, job.cfg.logger.tensorboard and job.layout.is_main, job.state.step
    )
    record_start(job, overrides, latest, from_world_size)


def train_recorded(job: Job) -> dict[str, float]:
    """train_loop, with a failure recorded in run.json (and told to the peers), and the stream,
    TensorBoard and evaluation submitter closed however it ends."""
    last: dict[str, float] = dict(job.record.data.get("last_losses") or {})  # a finished run
    try:
        return train_loop(job, last)
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


def close(job: Job, last: dict[str, float]) -> dict[str, Any]:
    """run.json says completed; without SLURM the queued evaluations run now."""
    completed = record_completion(job, last)
    job.evals.run_queued()
    return completed


class Schedule:
    """When a step logs, samples, checkpoints or votes on a scheduler signal (trainer.*). The last
    step does everything; a step that writes always votes, before it writes."""

    def __init__(self, trainer: TrainerConfig) -> None:
        self.trainer, self.max_steps = trainer, trainer.max_steps

    def _every(self, step: int, n: int) -> bool:
        return step % n == 0 or step == self.max_steps

    def log(self, step: int) -> bool:
        return self._every(step, self.trainer.log_every_steps)

    def sample(self, step: int) -> bool:
        return self._every(step, self.trainer.sample_every_steps)

    def checkpoint(self, step: int) -> bool:
        return self._every(step, self.trainer.ckpt_every_steps)

    def writes(self, step: int) -> bool:
        return self.log(step) or self.sample(step) or self.checkpoint(step)

    def vote(self, step: int) -> bool:
        return step % self.trainer.preempt_check_every_steps == 0 or self.writes(step)


@dataclass
class Throughput:
    """img/s of data + training time only (not sampling or saving), per log interval."""

    since_step: int
    busy_s: float = 0.0

    def rate(self, step: int, global_batch: int) -> float:
        """Images per second since the last call; starts the next interval."""
        rate = (step - self.since_step) * global_batch / max(self.busy_s, 1e-9)
        self.busy_s, self.since_step = 0.0, step
        return rate


def train_loop(job: Job, last: dict[str, float]) -> dict[str, float]:
    """Steps to trainer.max_steps; returns the last losses (the mean over ranks when logged)."""
    state, due = job.state, Schedule(job.cfg.trainer)
    progress = StepProgress(due.max_steps, state.step, job.layout.is_main)
    clock, first_step = Throughput(state.step), state.step
    try:
        with PreemptionGuard(job.lease) as guard:
            while state.step < due.max_steps:
                # Train one step.
                last = train_step(job, clock, first=state.step == first_step)
                step, done = state.step, state.step == due.max_steps
                progress.update(step, last)
                # Agree on a preemption signal, and that the run directory is still this
                # job's (all ranks, at a step boundary, before this step writes anything).
                decision = guard.agreed(before_writes=due.writes(step)) if due.vote(step) else 0
                if decision == DISPLACED:
                    raise displaced(job.lease, job.run_dir)
                # Log, sample, checkpoint.
                if due.log(step) or decision:
                    last = log_step(job, clock, last)
                if due.sample(step):
                    save_samples(job.task, job.cfg, job.run_dir, step, job.layout.is_main, job.tb)
                if due.checkpoint(step) or decision:
                    path, save_s = save_checkpoint(job)
                # Leave for the requeue (SIGUSR2) or the stop (SIGTERM).
                if decision and not done:
                    record_preempted(job, path, save_s)
                    guard.leave(decision, job.layout.rank)
    finally:
        progress.close()
    return last


def train_step(job: Job, clock: Throughput, first: bool) -> dict[str, float]:
    """One optimizer step over grad_accum_steps micro-batches; counts the step and its images."""
    start = time.perf_counter()
    batches = [job.stream.next_batch() for _ in range(job.cfg.deepspeed.grad_accum_steps)]
    losses = job.task.train_step(batches)
    clock.busy_s += time.perf_counter() - start
    if job.cfg.trainer.compile and first:  # this process compiled here
        report_compile(job, time.perf_counter() - start)
    job.state.step, job.state.images_seen = (
        job.state.step + 1,
        job.state.images_seen + job.global_batch,
    )
    return losses


def log_step(job: Job, clock: Throughput, losses: dict[str, float]) -> dict[str, float]:
    """metrics.jsonl, TensorBoard and the log line of this step; returns the losses averaged
    over ranks (a collective), which stop the run when they are not finite."""
    step, trainer = job.state.step, job.cfg.trainer
    losses = mean_over_ranks(losses)  # the losses of all ranks, not rank 0's alone
    rate = clock.rate(step, job.global_batch)
    log_interval(
        job.record, step, trainer.max_steps, job.state.images_seen, rate, losses,
        job.stream.skipped, engine_stats(job.task.engines), job.tb,
    )  # fmt: skip
    check_finite(job, step, losses)  # the same means on every rank
    return losses


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


def record_preempted(job: Job, path: Path, save_s: float) -> None:
    """run.json: preempted at this step, after its checkpoint committed. Off rank 0 the record
    writes nothing and its data may be empty (read before rank 0 wrote run.json)."""
    preemptions = job.record.data.get("preemptions", 0) + 1
    job.record.update(status="preempted", preemptions=preemptions, ended=time.time())
    job.record.add_event("preempted", step=job.state.step, checkpoint=path.name, save_s=save_s)


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
    """run.json: completed, with the last losses; what train() returns."""
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
