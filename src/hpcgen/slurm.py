"""SLURM queries that work without accounting: squeue first, then scontrol, never sacct."""

from __future__ import annotations

import shutil
import subprocess

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
