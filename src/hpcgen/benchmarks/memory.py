"""Deterministic memory counts of a step, independent of the allocator and of the machine's load:
the peak bytes of tensor storage that the step's operators allocated and still held at once
(forward, backward and any recomputation in it), and what autograd saved for the backward."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakTensorBytes(TorchDispatchMode):
    """Bytes of the storages that operators create inside the mode, live and at their peak.
    A storage counts from the operator that returns it until it is freed (a finalizer on its
    Python object, which torch keeps as long as the storage lives); views and in-place results
    return a storage already counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._counted: set[int] = set()

    def _freed(self, key: int, nbytes: int) -> None:
        self._counted.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in self._counted:
                continue
            self._counted.add(key)
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, key, storage.nbytes())
        return out


def step_memory(step: Callable[[], torch.Tensor]) -> dict[str, int]:
    """peak_bytes: PeakTensorBytes over the forward `step` returns the loss of and its backward;
    saved_tensors / saved_bytes: what autograd packed for the backward outside checkpointed
    regions (a checkpointed block's own saving is its checkpoint's business, and its inputs are
    held by the checkpoint, not packed: peak_bytes is the number to compare)."""
    saved = {"saved_tensors": 0, "saved_bytes": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved["saved_tensors"] += 1
        saved["saved_bytes"] += t.numel() * t.element_size()
        return t

    with PeakTensorBytes() as mode:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = step()
        loss.backward()
    return {"peak_bytes": mode.peak, **saved}
