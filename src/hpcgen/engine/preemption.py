"""Scheduler signals: the handler only sets a flag; ranks agree at step boundaries.

SLURM sends SIGUSR2 (submitit's --signal=USR2@N) before a time-out or a preemption, and SIGTERM
before it kills or requeues a job itself (scancel, scontrol requeue). Saving inside a handler
would race the training step, and a rank that saves alone deadlocks the collective save, so the
handler records the signal and the loop asks `agreed()` at each step boundary (one all-reduce).

submitit installs its own SIGUSR2 handler in the job (rank 0: resubmission pickle via the
launcher's `checkpoint()`, `scontrol requeue`, exit). We keep it and call it ourselves once the
checkpoint is committed, so hydra-submitit-launcher requeues the same task into the same run
directory and its time-out accounting stays intact.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import torch
import torch.distributed as dist

from hpcgen.engine.distributed import print0
from hpcgen.engine.lease import RunLease

REQUEUE, STOP = 2, 1  # agreed decisions; the larger wins when ranks saw different signals
DISPLACED = 3  # another launch took the run directory's lease: stop, and save nothing


class Preempted(SystemExit):
    """Raised on every rank after the preemption checkpoint; not a failure."""


class PreemptionGuard:
    """Install with `with PreemptionGuard() as guard:`; poll `guard.agreed()` between steps."""

    def __init__(self, lease: RunLease | None = None) -> None:
        self.seen, self.lease = 0, lease  # rank 0 holds the lease: it votes DISPLACED
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> PreemptionGuard:
        for sig, decision in ((signal.SIGUSR2, REQUEUE), (signal.SIGTERM, STOP)):
            self._previous[sig] = signal.signal(sig, self._flag(decision))
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _flag(self, decision: int):
        def handler(signum: int, frame: object) -> None:
            self.seen = max(self.seen, decision)  # a flag, nothing else

        return handler

    def agreed(self, before_writes: bool = False) -> int:
        """0, STOP, REQUEUE or DISPLACED, the same on every rank (a collective).
        `before_writes`: rank 0 looks at the lease file itself now, not at its last beat."""
        vote = self.seen
        if self.lease is not None and self.lease.taken_over(read=before_writes):
            vote = DISPLACED
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return vote
        device = "cuda" if torch.cuda.is_available() else "cpu"
        flag = torch.tensor([vote], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def leave(self, decision: int, rank: int) -> None:
        """After the committed save: rank 0 requeues (REQUEUE only); every rank exits."""
        if decision == REQUEUE and rank == 0:
            self._requeue()
        print0(f"[hpcgen] {'requeued' if decision == REQUEUE else 'stopped'} after saving")
        raise Preempted(0)

    def _requeue(self) -> None:
        submitit_handler = self._previous.get(signal.SIGUSR2)
        if getattr(submitit_handler, "__self__", None).__class__.__name__ == "SignalHandler":
            try:  # resubmission pickle, scontrol requeue, exit: submitit's own path
                submitit_handler(signal.SIGUSR2, None)
            except SystemExit:
                return
            return
        job_id = os.environ.get("SLURM_JOB_ID")
        if job_id:
            subprocess.run(["scontrol", "requeue", job_id], check=False, timeout=60)
        else:
            print0("[hpcgen] not a SLURM job: nothing to requeue; start it again to resume")
