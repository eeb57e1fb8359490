"""SLURM queries that work without accounting: squeue first, then scontrol, never sacct."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

LOCAL_CLUSTER_HINT = "start the local one with 'sudo slurm/local-cluster.sh start'"


def reachable(timeout_s: float = 15.0) -> tuple[bool, str]:
    """(True, partitions) when sinfo answers, else (False, why)."""
    if shutil.which("sinfo") is None:
        return False, f"sinfo is not installed; {LOCAL_CLUSTER_HINT}"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return False, f"sinfo did not answer within {timeout_s:.0f}s; {LOCAL_CLUSTER_HINT}"
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"sinfo failed ({why}); {LOCAL_CLUSTER_HINT}"
    return True, " ".join(out.stdout.split())


def job_state(job_id: str, timeout_s: float = 10.0) -> str | None:
    """State of a job (e.g. RUNNING, COMPLETED), or None when SLURM no longer knows it."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for field in out.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return None


ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"}


def active_jobs_of(submitit_dir: Path) -> dict[str, str]:
    """{job id: state} of the jobs submitit logged under `submitit_dir` that SLURM still
    has queued or running (an empty dict when there are none or SLURM is not installed)."""
    if not submitit_dir.is_dir() or shutil.which("squeue") is None:
        return {}
    ids = [p.name for p in submitit_dir.iterdir() if p.is_dir() and p.name[:1].isdigit()]
    states = {job: job_state(job) for job in ids}
    return {job: state for job, state in states.items() if state in ACTIVE_STATES}


def wait_until_finished(job_ids: list[str], timeout_s: float = 60.0) -> None:
    """Poll until none of job_ids is active (their results are in, SLURM is still closing them)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(job_state(j) in ACTIVE_STATES for j in job_ids):
            return
        time.sleep(1.0)


def sacct_works(timeout_s: float = 10.0) -> bool:
    try:
        return (
            subprocess.run(
                ["sacct", "-n", "-X", "-j", "1"], capture_output=True, timeout=timeout_s
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def sacct_compatible_states(job_ids: list[str]) -> str:
    """What `sacct -o JobID,State,NodeList --parsable2 -j ...` would print, from squeue."""
    lines = ["JobID|State|NodeList"]
    out = subprocess.run(
        ["squeue", "-h", "-r", "--states=all", "-j", ",".join(job_ids), "-o", "%i|%T|%N"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines += [line for line in out.stdout.splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


def watch_with_squeue_when_accounting_is_off() -> bool:
    """Make submitit poll squeue instead of sacct on clusters without accounting (no slurmdbd).

    submitit asks sacct for job states and, where accounting is off, logs a warning on every
    poll and reports UNKNOWN. Its watcher takes any command that prints sacct's format, so we
    point it at `python -m hpcgen.slurm sacct-compat`. Returns True when it did so.
    """
    if shutil.which("sacct") is not None and sacct_works():
        return False
    from submitit.slurm.slurm import SlurmInfoWatcher

    def make_command(watcher: SlurmInfoWatcher) -> list[str] | None:
        to_check = {x.split("_")[0] for x in watcher._registered - watcher._finished}
        if not to_check:
            return None
        return [sys.executable, "-m", "hpcgen.slurm", "sacct-compat", *sorted(to_check)]

    SlurmInfoWatcher._make_command = make_command  # type: ignore[method-assign]
    return True


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "sacct-compat":
        sys.stdout.write(sacct_compatible_states(sys.argv[2:]))
    else:
        sys.exit("usage: python -m hpcgen.slurm sacct-compat JOBID [JOBID ...]")
