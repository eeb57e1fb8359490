"""A per-layer table of a network (name, parameters, buffers, output shape, dtype), as the
report's Figures 5 and 6 print it, from one forward pass with hooks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerRow:
    name: str
    parameters: int
    buffers: int
    output_shape: str
    dtype: str


def _describe(output: object) -> tuple[str, str]:
    tensors = [output] if isinstance(output, torch.Tensor) else list(output or ())
    tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
    shapes = ", ".join(str(list(t.shape)) for t in tensors)
    dtypes = ", ".join(sorted({str(t.dtype).removeprefix("torch.") for t in tensors}))
    return shapes or "-", dtypes or "-"


def layer_summary(
    module: nn.Module,
    inputs: tuple,
    report: tuple[type, ...],
    inside: tuple[str, ...] = (),
    **kwargs: object,
) -> list[LayerRow]:
    """Rows in execution order for every submodule of a type in `report` (except names ending
    in `inside`, whose tensors count in their parent's row); each parameter and buffer is
    counted once, in the first row that owns it (layers before their blocks), so the rows sum
    to the module's totals (a last row, "<other>", takes what no layer owns, if anything)."""
    seen: set[int] = set()
    rows: list[LayerRow] = []
    names = {m: n for n, m in module.named_modules()}

    def own(tensors: list[torch.Tensor]) -> int:
        fresh = [t for t in tensors if t is not None and id(t) not in seen]
        seen.update(id(t) for t in fresh)
        return sum(t.numel() for t in fresh)

    def hook(mod: nn.Module, _inputs: object, output: object) -> None:
        shapes, dtypes = _describe(output)
        params, buffers = own(list(mod.parameters())), own(list(mod.buffers()))
        rows.append(LayerRow(names[mod], params, buffers, shapes, dtypes))

    handles = [
        m.register_forward_hook(hook)
        for name, m in module.named_modules()
        if isinstance(m, report) and not (inside and name.endswith(inside))
    ]
    try:
        with torch.no_grad():
            module(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    rest = LayerRow("<other>", own(list(module.parameters())), own(list(module.buffers())), "", "")
    return rows + ([rest] if rest.parameters or rest.buffers else [])
