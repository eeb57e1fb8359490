"""Evaluation while training runs (eval.during_training): rank 0 submits the evaluation of each
milestone checkpoint, and of the run's last one, as its own job when the checkpoint commits.
The training loop never waits for an evaluation.

On SLURM (the job runs under SLURM_JOB_ID and sbatch is on PATH): one job of
slurm/eval_array.sbatch (task 0 of a one-entry manifest, eval/submitted/step_N.json) on the
resources `eval` names, submitted with `sbatch --parsable` from a background thread; its job id
goes into the same file. Each submission first resubmits the earlier milestones (and earlier
submitted checkpoints) that have neither a result nor a live job in squeue: a failed,
cancelled or preempted evaluation is retried by the next one. Results are idempotent.

Without SLURM (hydra/launcher=local): the same files, with no job id, queue the evaluations and
rank 0 runs them one after another when training has ended, so that they never compete with
training for the CPUs or the GPU. A run stopped before that leaves them queued: its resume, or
`python launch/evaluate.py run=<run>`, evaluates them.

Retention (CheckpointManager.prune) keeps every checkpoint whose evaluation is pending
(run_dir.evaluation_pending): a file is written here before anything is submitted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hpcgen import CHECKOUT, slurm
from hpcgen.config import TrainConfig
from hpcgen.engine.manifest import write_atomic
from hpcgen.engine.run_dir import (
    checkpoint_dir,
    commit_manifest,
    committed_checkpoints,
    eval_entry,
    is_committed,
    result_path,
    step_of,
    submission_path,
    submission_paths,
)

EVAL_SCRIPT = CHECKOUT / "slurm" / "eval_array.sbatch"
# the training job's own variables would describe its allocation to the evaluation's sbatch
NOT_INHERITED = ("SLURM_", "SBATCH_", "SUBMITIT_", "RANK", "LOCAL_RANK", "WORLD_SIZE",
                 "MASTER_ADDR", "MASTER_PORT")  # fmt: skip
JOIN_TIMEOUT_S = 120.0


def on_slurm() -> bool:
    """Whether evaluations go to SLURM: this job runs under it and can submit."""
    return bool(os.environ.get("SLURM_JOB_ID")) and shutil.which("sbatch") is not None


def _override(key: str, value: Any) -> str:
    text = {None: "null", True: "true", False: "false"}.get(value, value)  # type: ignore[call-overload]
    return f"eval.{key}={text}"


def write_submission(ckpt: Path, record: dict[str, Any]) -> None:
    path = submission_path(ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=1) + "\n")  # readers see all of it or none


def read_submission(ckpt: Path) -> dict[str, Any] | None:
    try:
        return json.loads(submission_path(ckpt).read_text())
    except (OSError, ValueError):
        return None


class EvalQueue:
    """Rank 0's submitter; on other ranks, or with eval.during_training=false, it does nothing."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, is_main: bool) -> None:
        self.run_dir, self.eval = run_dir, cfg.eval
        self.milestone_every = cfg.trainer.ckpt_milestone_every_steps
        self.max_steps = cfg.trainer.max_steps
        self.enabled = is_main and cfg.eval.during_training
        self.slurm = on_slurm()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def wanted(self, ckpt: Path) -> bool:
        """Milestones and the run's last checkpoint are evaluated."""
        step = step_of(ckpt)
        return step == self.max_steps or (self.milestone_every and step % self.milestone_every == 0)

    def committed(self, ckpt: Path) -> None:
        """Right after `ckpt` committed: queue its evaluation and, on SLURM, submit it (and any
        overdue one) from a background thread."""
        if not (self.enabled and self.wanted(ckpt)) or result_path(ckpt).is_file():
            return
        self._queue(ckpt)  # retention keeps it from here on
        if self.slurm:
            thread = threading.Thread(target=self._submit, args=(ckpt,), name="hpcgen-eval-submit")
            thread.daemon = True  # a preempted job does not wait: the next submission retries
            thread.start()
            self._threads.append(thread)

    def _queue(self, ckpt: Path) -> dict[str, Any]:
        record = read_submission(ckpt) or {
            "entries": [eval_entry(ckpt)],  # what slurm/eval_array.sbatch's task 0 reads
            "committed": commit_manifest(ckpt).stat().st_mtime,
            "jobs": [],
        }
        write_submission(ckpt, record)
        return record

    def overdue(self, before: Path | None = None) -> list[Path]:
        """Milestones and submitted checkpoints (older than `before`) still committed, with no
        result and no live SLURM job: what a submission resubmits."""
        ckpts = {c for c in committed_checkpoints(checkpoint_dir(self.run_dir)) if self.wanted(c)}
        ckpts |= {checkpoint_dir(self.run_dir) / p.stem for p in submission_paths(self.run_dir)}
        late = []
        for ckpt in sorted(ckpts, key=step_of):
            if before is not None and step_of(ckpt) >= step_of(before):
                continue
            if not is_committed(ckpt) or result_path(ckpt).is_file():
                continue
            jobs = (read_submission(ckpt) or {}).get("jobs") or []
            if jobs and slurm.job_state(jobs[-1]["job_id"]) in slurm.ACTIVE_STATES:
                continue
            late.append(ckpt)
        return late

    def _submit(self, ckpt: Path) -> None:
        with self._lock:  # one submission at a time: the files stay consistent
            try:
                for late in self.overdue(before=ckpt):
                    self.sbatch(late, resubmitted=True)
                self.sbatch(ckpt)
            except Exception as err:  # never the training's end: the next submission retries
                print(f"WARNING: submitting the evaluation of {ckpt.name} failed: {err}; the "
                      "next milestone's submission retries it", flush=True)  # fmt: skip

    def sbatch(self, ckpt: Path, resubmitted: bool = False) -> str:
        """One job of slurm/eval_array.sbatch for `ckpt`; returns its SLURM job id."""
        record, path = self._queue(ckpt), submission_path(ckpt)
        e = self.eval
        argv = [
            "sbatch",
            "--parsable",
            f"--job-name=hpcgen-eval-{ckpt.name}",
            f"--output={path.with_name(ckpt.name)}-%j.out",
            f"--cpus-per-task={e.cpus_per_task}",
            f"--time={e.time_min}",
        ]
        argv += [f"--partition={e.partition}"] if e.partition else []
        argv += [f"--gpus={e.gpus}"] if e.gpus else []
        argv += [f"--mem={e.mem_gb}G"] if e.mem_gb else []
        argv += [*e.sbatch_args, str(EVAL_SCRIPT), str(path), *self.overrides(ckpt)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
        env |= {"HPCGEN_REPO": str(CHECKOUT), "HPCGEN_PYTHON": sys.executable}
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env=env, cwd=CHECKOUT
        )
        if out.returncode != 0:
            why = (out.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"sbatch exited {out.returncode}: {why}")
        job_id, now = out.stdout.strip().split(";")[0], time.time()
        after = now - record["committed"]
        record["jobs"].append({"job_id": job_id, "submitted": now, "seconds_after_commit": after})
        write_submission(ckpt, record)
        again = f" again (attempt {len(record['jobs'])})" if resubmitted else ""
        print(f"[hpcgen] evaluation of {ckpt.name} submitted{again}: SLURM job {job_id}, "
              f"{after:.2f}s after its commit", flush=True)  # fmt: skip
        return job_id

    def overrides(self, ckpt: Path) -> list[str]:
        """launch/evaluate.py's overrides: eval.settings, and its Hydra dir beside the record."""
        hydra_dir = submission_path(ckpt).with_name(f"{ckpt.name}-hydra")
        return [_override(k, v) for k, v in self.eval.settings.items()] + [
            f"hydra.run.dir={hydra_dir}"
        ]

    def close(self) -> None:
        """Wait (briefly) for submissions in flight, so that the last one is not lost."""
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_S)

    def run_queued(self) -> None:
        """Without SLURM, after training: every queued evaluation here, one after another."""
        if not self.enabled or self.slurm:
            return
        for ckpt in self.overdue():
            self._queue(ckpt)
            argv = [
                sys.executable,
                str(CHECKOUT / "launch" / "evaluate.py"),
                f"run={self.run_dir}",
                f"manifest={submission_path(ckpt)}",
                "task=0",
                *self.overrides(ckpt),
            ]
            print(f"[hpcgen] evaluating {ckpt.name} (queued during training)", flush=True)
            done = subprocess.run(argv, cwd=CHECKOUT)
            if done.returncode != 0:
                print(f"WARNING: the evaluation of {ckpt.name} exited {done.returncode} (its "
                      "output is above); it stays queued: resume the run, or python "
                      f"launch/evaluate.py run={self.run_dir}", flush=True)  # fmt: skip


def pending(run_dir: Path) -> list[dict[str, Any]]:
    """Submitted evaluations without a result: step, SLURM job id (None: queued for the end of
    a local run) and its state."""
    rows = []
    for path in submission_paths(run_dir):
        ckpt = checkpoint_dir(run_dir) / path.stem
        if result_path(ckpt).is_file():
            continue
        jobs = (read_submission(ckpt) or {}).get("jobs") or []
        job_id = jobs[-1]["job_id"] if jobs else None
        state = (slurm.job_state(job_id) or "GONE") if job_id else "QUEUED"
        rows.append({"step": step_of(path), "job_id": job_id, "state": state,
                     "attempts": len(jobs)})  # fmt: skip
    return rows
