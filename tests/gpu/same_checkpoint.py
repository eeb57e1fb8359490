"""Are two checkpoints of the same step bitwise equal? Every tensor of every .pt file under both
(DeepSpeed's engines and optimizer shards, hpcgen's per-rank state), matched by file and key
path; prints what it compared and the largest difference, exits 1 when anything differs.

Used by tests/gpu/check.sh: a run of N steps against a run of N - 1 steps resumed to N.
At one rank ZeRO-3 pads nothing, so the optimizer shards compare element for element.

    python tests/gpu/same_checkpoint.py <run A> <run B> <step>
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def tensors(obj: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside nested dicts / lists / tuples, keyed by its path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return {}
    found: dict[str, torch.Tensor] = {}
    for key, value in items:
        found |= tensors(value, f"{prefix}/{key}")
    return found


def compare(a: Path, b: Path) -> tuple[int, int, list[str]]:
    """(files compared, tensors compared, what differs)."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.pt"))
    files_b = sorted(p.relative_to(b) for p in b.rglob("*.pt"))
    if not files_a:
        return 0, 0, [f"{a}: no .pt files"]
    if files_a != files_b:
        only = sorted(set(files_a) ^ set(files_b))
        return 0, 0, [f"files in one checkpoint only: {[str(f) for f in only]}"]
    count, diffs = 0, []
    for name in files_a:
        ta = tensors(torch.load(a / name, map_location="cpu", weights_only=False))
        tb = tensors(torch.load(b / name, map_location="cpu", weights_only=False))
        if ta.keys() != tb.keys():
            diffs.append(f"{name}: different tensors ({sorted(ta.keys() ^ tb.keys())[:5]})")
            continue
        for key, x in ta.items():
            y, count = tb[key], count + 1
            if x.shape != y.shape or x.dtype != y.dtype:
                diffs.append(f"{name}{key}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
            elif not torch.equal(x, y):
                gap = (x.double() - y.double()).abs().max().item() if x.is_floating_point() else 1
                diffs.append(f"{name}{key}: max |difference| {gap:.3g}")
    return len(files_a), count, diffs


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    step = int(sys.argv[3])
    a, b = (Path(p) / "checkpoints" / f"step_{step:08d}" for p in sys.argv[1:3])
    files, count, diffs = compare(a, b)
    if diffs:
        print(f"[check] NOT bitwise: {len(diffs)} of {count} tensors in {files} files differ")
        for line in diffs[:20]:
            print(f"[check]   {line}")
        return 1
    optim = [torch.load(p, weights_only=False) for p in a.rglob("*optim_states.pt")]
    stages = sorted({int(o["optimizer_state_dict"].get("zero_stage", -1)) for o in optim})
    print(f"[check] bitwise equal: {count} tensors in {files} files, ZeRO stage(s) {stages} "
          f"({a} vs {b})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
