"""Are two checkpoints of the same step bitwise equal? Every tensor of every .pt file under both
(DeepSpeed's engines and optimizer shards, hpcgen's per-rank state), matched by file and key
path, and every other value in them (counters, RNG states, the loss scaler); prints what it
compared and the largest difference, exits 1 when anything differs. Its verdict is that of
tests/test_slurm.py's `_equal`, which needs pytest's test modules; this one also says where.

Used by tests/gpu/check.sh: a run of N steps against a run of N - 1 steps resumed to N.
At one rank ZeRO-3 pads nothing, so the optimizer shards compare element for element.

    python tests/gpu/same_checkpoint.py <run A> <run B> <step>
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from hpcgen.engine.run_dir import checkpoint_dir, checkpoint_path


def differences(a: object, b: object, path: str) -> tuple[int, list[str]]:
    """(leaves compared, where a and b differ): tensors and arrays element for element, dicts,
    lists and objects (e.g. DeepSpeed's loss scaler) leaf by leaf, everything else by ==; the
    RNG states and counters count as much as the weights."""
    if isinstance(a, torch.Tensor | np.ndarray):
        if type(a) is not type(b) or a.shape != b.shape or a.dtype != b.dtype:
            return 1, [f"{path}: {type(a).__name__} {a.dtype}{list(a.shape)} vs {type(b).__name__}"]
        x, y = torch.as_tensor(a), torch.as_tensor(b)
        if torch.equal(x, y):
            return 1, []
        if not x.is_floating_point():
            return 1, [f"{path}: differs"]
        return 1, [f"{path}: max |difference| {(x.double() - y.double()).abs().max().item():.3g}"]
    if isinstance(a, dict | list | tuple):
        if type(a) is not type(b) or len(a) != len(b):
            return 1, [f"{path}: {type(a).__name__} of {len(a)} vs {type(b).__name__}"]
        if isinstance(a, dict) and a.keys() != b.keys():
            return 1, [f"{path}: keys {sorted(map(str, a.keys() ^ b.keys()))[:5]} in one only"]
        keys = list(a) if isinstance(a, dict) else range(len(a))
        count, found = 0, []
        for key in keys:
            n, d = differences(a[key], b[key], f"{path}/{key}")
            count, found = count + n, found + d
        return count, found
    if hasattr(a, "__dict__") and not isinstance(a, type):
        if type(a) is not type(b):
            return 1, [f"{path}: {type(a).__name__} vs {type(b).__name__}"]
        return differences(vars(a), vars(b), path)
    return 1, [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def compare(a: Path, b: Path) -> tuple[int, int, list[str], list[int]]:
    """(files compared, leaves compared, what differs, the ZeRO stages of a's optimizer shards)."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.pt"))
    files_b = sorted(p.relative_to(b) for p in b.rglob("*.pt"))
    if not files_a:
        return 0, 0, [f"{a}: no .pt files"], []
    if files_a != files_b:
        only = sorted(set(files_a) ^ set(files_b))
        return 0, 0, [f"files in one checkpoint only: {[str(f) for f in only]}"], []
    count, diffs, stages = 0, [], set()
    for name in files_a:
        x = torch.load(a / name, map_location="cpu", weights_only=False)
        y = torch.load(b / name, map_location="cpu", weights_only=False)
        n, d = differences(x, y, str(name))
        count, diffs = count + n, diffs + d
        if name.name.endswith("optim_states.pt"):
            stages.add(int(x["optimizer_state_dict"].get("zero_stage", -1)))
    return len(files_a), count, diffs, sorted(stages)


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    step = int(sys.argv[3])
    a, b = (checkpoint_path(checkpoint_dir(Path(p)), step) for p in sys.argv[1:3])
    files, count, diffs, stages = compare(a, b)
    if diffs:
        print(f"[check] NOT bitwise: {len(diffs)} of {count} leaves in {files} files differ")
        for line in diffs[:20]:
            print(f"[check]   {line}")
        return 1
    print(f"[check] bitwise equal: {count} leaves in {files} files, ZeRO stage(s) {stages} "
          f"({a} vs {b})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
