"""Free space where checkpoints go: the filesystem's, and the user's quota where a tool answers.

On clusters the quota (`lfs quota` on Lustre, `quota` elsewhere) is usually what runs out
first, and statvfs does not see it. A write that fails for want of space shows up as ENOSPC or
EDQUOT, or from inside torch.save as a RuntimeError without an errno.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def estimated_bytes(parameters: dict[str, int]) -> int:
    """A checkpoint's size before the first one measures it: fp32 weights, Adam's master copy
    and two moments, and one EMA copy in rank 0's state file (an upper bound for bf16), at any
    world size: 20 bytes a parameter."""
    return 4 * sum(parameters.values()) * 5


def is_no_space(err: BaseException) -> bool:
    """Whether ENOSPC or EDQUOT is anywhere in the exception's chain."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
            return True
        err = err.__cause__ or err.__context__
    return False


def mount_point(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() or not os.path.ismount(path):
        path = path.parent
    return path


def parse_quota(output: str) -> int | None:
    """Bytes left under the block quota in `lfs quota -q` / `quota -w -f` output (columns:
    filesystem, KiB used, soft limit, hard limit, ...); None when no line sets a limit."""
    left = None
    for line in output.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        try:
            used, soft, hard = (int(c.rstrip("*")) for c in cols[1:4])
        except ValueError:
            continue
        limit = hard or soft
        if limit:
            here = max(limit - used, 0) * 1024
            left = here if left is None else min(left, here)
    return left


def _quota_left(mount: Path) -> int | None:
    uid = str(os.getuid())
    for tool, args in (("lfs", ["quota", "-q", "-u", uid]), ("quota", ["-w", "-u", "-f"])):
        if shutil.which(tool) is None:
            continue
        try:
            out = subprocess.run(
                [tool, *args, str(mount)], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            continue
        left = parse_quota(out.stdout)
        if left is not None:
            return left
    return None


def free_bytes(path: Path) -> tuple[int, str]:
    """(bytes this user can still write under `path`, what limits it)."""
    mount = mount_point(path)
    st = os.statvfs(mount)
    free, what = st.f_bavail * st.f_frsize, f"free on {mount}"
    quota = _quota_left(mount)
    if quota is not None and quota < free:
        free, what = quota, f"left in your quota on {mount}"
    return free, what


def human(n: float, note: str = "") -> str:
    """1234567 -> '1.2 MB (1,234,567 bytes)'; a note goes inside the parentheses."""
    short = f"{int(n):,} bytes"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            short = f"{n / size:.1f} {unit}"
            break
    return f"{short} ({int(n):,} bytes{': ' + note if note else ''})"
