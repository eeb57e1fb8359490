"""One live process per run directory: a lease file with a heartbeat.

`<run>/.lease.json` names the holder (SLURM job id, host, pid and its start time) and is
rewritten every `heartbeat_s` by a thread of rank 0. flock is not honoured everywhere (NFS,
Lustre), so a second launch reads the file and decides whether its holder still lives:

  same host            the pid runs and started when the lease says (pid reuse is not life)
  same SLURM job+step  dead: SLURM runs one attempt of a job at a time (a requeue resumes)
  another SLURM job    alive while squeue/scontrol show it PENDING, RUNNING, REQUEUED, ...
  otherwise            alive while its heartbeat is younger than `STALE_BEATS` beats

A dead holder never blocks: its lease is taken over. Who may take it is decided under a lock
directory (mkdir is atomic on every shared filesystem), held for milliseconds.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from hpcgen import slurm
from hpcgen.config import ConfigError
from hpcgen.engine.run_record import slurm_job_id

LEASE = ".lease.json"
STALE_BEATS = 4  # a holder on another host is dead after this many missed heartbeats
LOCK_STALE_S = 60.0  # a lock directory older than this was left by a killed launch


class RunBusyError(ConfigError):
    """The run directory is held by a live process; the message names it and what to do."""


class LeaseLost(RuntimeError):
    """Another launch took this job's lease while it ran; the job stops writing at once."""


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None
    when it is gone or a zombie (killed, not yet reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if len(fields) < 20 or fields[0] in ("Z", "X") else fields[19]


def me() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": process_start_time(pid),
        "slurm_job_id": slurm_job_id(),
        "slurm_step": os.environ.get("SLURM_STEP_ID"),
    }


def read_lease(run_dir: Path) -> dict[str, Any] | None:
    try:
        lease = json.loads((run_dir / LEASE).read_text())
    except (OSError, ValueError):
        return None  # none, or cut by a crash: a lease nobody can renew is nobody's
    return lease if isinstance(lease, dict) else None


def holder_alive(lease: dict[str, Any], heartbeat_s: float) -> tuple[bool, str]:
    """(alive, how that was decided) for the holder named in `lease`, seen from here."""
    mine = me()
    job = lease.get("slurm_job_id")
    if lease.get("host") == mine["host"]:
        start = process_start_time(int(lease.get("pid", 0)))
        if start is not None and start == lease.get("pid_start"):
            return True, "its process runs on this host"
        return False, "its process is gone from this host"
    if job and job == mine["slurm_job_id"]:
        if lease.get("slurm_step") == mine["slurm_step"]:
            return False, f"it was an earlier attempt of this SLURM job {job}"
        # another srun step of this allocation, which lives on: only heartbeats tell
    elif job:
        state = slurm.job_state(job)
        if state is not None or slurm.reachable()[0]:
            alive = state in slurm.ACTIVE_STATES
            return alive, f"SLURM job {job} is {state or 'no longer known to SLURM'}"
    age = time.time() - float(lease.get("heartbeat", 0))
    stale_s = STALE_BEATS * float(lease.get("heartbeat_s", heartbeat_s))
    return age < stale_s, f"its last heartbeat was {age:.0f}s ago (dead after {stale_s:.0f}s)"


def describe(lease: dict[str, Any]) -> str:
    job = lease.get("slurm_job_id")
    where = f"pid {lease.get('pid')} on {lease.get('host')}"
    return f"SLURM job {job} ({where})" if job else where


def busy_message(run_dir: Path, lease: dict[str, Any], how: str) -> str:
    job = lease.get("slurm_job_id")
    stop = f"scancel {job}" if job else f"kill {lease.get('pid')} on {lease.get('host')}"
    return (
        f"{run_dir} is in use by {describe(lease)}, started "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(lease.get('started', 0)))} "
        f"({how}): a second launch would train into the same run. Wait for it to finish "
        f"(python launch/status.py {run_dir}), stop it ({stop}) and run this command again "
        "to resume, or choose another hydra.run.dir / hydra.sweep.dir"
    )


def check_free(run_dir: Path, heartbeat_s: float) -> None:
    """RunBusyError when a live holder has the run directory (touches nothing)."""
    lease = read_lease(run_dir)
    if lease is not None:
        alive, how = holder_alive(lease, heartbeat_s)
        if alive:
            raise RunBusyError(busy_message(run_dir, lease, how))


class _LockDir:
    """A few milliseconds of mutual exclusion between launches: mkdir is atomic everywhere."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.path.mkdir()
                return
            except FileExistsError:
                try:
                    if time.time() - self.path.stat().st_mtime > LOCK_STALE_S:
                        shutil.rmtree(self.path, ignore_errors=True)
                        continue
                except FileNotFoundError:
                    continue
                if time.monotonic() > deadline:
                    raise RunBusyError(
                        f"{self.path} has been held for 30 s by another launch: if none runs, "
                        f"remove it (rmdir {self.path})"
                    ) from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class RunLease:
    """Held by rank 0 for the whole job: `acquire()` refuses a live holder, a thread renews the
    heartbeat, `release()` removes the file (a killed holder's file is taken over later)."""

    def __init__(self, run_dir: Path, heartbeat_s: float) -> None:
        self.run_dir, self.heartbeat_s = run_dir, heartbeat_s
        self.token = uuid.uuid4().hex
        self.lost: str | None = None  # what happened, once another launch took the lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with _LockDir(self.run_dir / ".lease.lock"):
            previous = read_lease(self.run_dir)
            if previous is not None:
                alive, how = holder_alive(previous, self.heartbeat_s)
                if alive:
                    raise RunBusyError(busy_message(self.run_dir, previous, how))
                print(f"[hpcgen] taking over {self.run_dir} from {describe(previous)}: {how}",
                      flush=True)  # fmt: skip
            self.lease = {**me(), "token": self.token, "started": time.time(),
                          "heartbeat_s": self.heartbeat_s}  # fmt: skip
            self._write()
        self._thread = threading.Thread(target=self._beat, name="hpcgen-lease", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        self.lease["heartbeat"] = time.time()
        tmp = self.run_dir / f".lease.{self.token}.tmp"
        tmp.write_text(json.dumps(self.lease, indent=1))
        os.replace(tmp, self.run_dir / LEASE)

    def taken_over(self, read: bool = False) -> bool:
        """Whether another launch holds the lease now; `read`: look at the file now (before a
        write) instead of trusting the heartbeat thread's last look."""
        if self.lost is None and read:
            current = read_lease(self.run_dir)
            if current is not None and current.get("token") != self.token:
                started = time.localtime(current.get("started", 0))
                self.lost = (
                    f"{self.run_dir} was taken over by {describe(current)} at "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', started)} while this job ran (it "
                    "found this job's heartbeat stale: a network partition, a stalled node): "
                    "this job stops now and writes nothing more there; the run goes on in the "
                    "new holder. If this job should have kept it, stop that one and run the "
                    "same command again to resume"
                )
        return self.lost is not None

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:  # under the launches' lock: a takeover never lands between look and renewal
                with _LockDir(self.run_dir / ".lease.lock"):
                    if self.taken_over(read=True):
                        return  # the loop stops at its next step boundary, and says so
                    self._write()
            except (OSError, RunBusyError) as err:  # a full disk, a lost mount: next beat
                print(f"WARNING: could not renew {self.run_dir / LEASE}: {err}", flush=True)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = read_lease(self.run_dir)
        if current is not None and current.get("token") == self.token:
            (self.run_dir / LEASE).unlink(missing_ok=True)


def displaced(lease: RunLease | None, run_dir: Path) -> LeaseLost:
    """What every rank raises once the ranks agreed that rank 0 lost the lease."""
    if lease is not None and lease.lost:
        return LeaseLost(lease.lost)
    return LeaseLost(
        f"rank 0 found {run_dir} taken over by another launch (its log names the new holder): "
        "this rank stops without writing anything more there"
    )
