"""How close a training step comes to the machine.

FLOPs per step are counted by torch's FlopCounterMode over the real task's `train_step`
(forward and backward: matmuls, convolutions, attention; elementwise work, norms and the
optimizer are not counted, as in model-FLOPs-utilisation figures). The machine's rates are
measured in the same process: a dense fp32 matmul (the peak a step could reach) and a 3x3
convolution of U-Net-like shape (what its dominant kernel reaches alone). Utilisation is achieved
FLOP/s (counted FLOPs / median step seconds) over the best measured rate.

Where the time goes: one step under torch's profiler, each op's own time grouped by kind
(convolution forward and backward, matmul, attention, norms, optimizer, the rest). On the CPU
the convolutions run in oneDNN's kernels, which torch.compile calls as they are: the step's
seconds over its convolution seconds bound what compiling the rest can give (`bound_by_conv`).

A GAN step's cost depends on the step: lazy R1 runs every r1_interval steps and the path-length
penalty every pl_interval, so three steps are counted and timed (plain, PL only, R1 and PL) and
the amortised step is plain + PL extra / pl_interval + R1 extra / r1_interval.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

from hpcgen.benchmarks.common import measure


class _GlobalFlopCounter(FlopCounterMode):
    """FlopCounterMode without its per-module breakdown: the module tracker's backward hooks
    make torch.autograd.grad on a leaf fail ("A leaf node was passed to
    _will_engine_execute_node"), which R1 and the path-length penalty call; the counts (all
    under 'Global') are the same."""

    def __enter__(self):
        self.flop_counts.clear()
        self.mode = _FlopCounterMode(self)
        self.mode.__enter__()
        return self

    def __exit__(self, *args):
        mode, self.mode = self.mode, None
        return mode.__exit__(*args)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs torch's counter sees while fn runs (forward and any backward inside it)."""
    with _GlobalFlopCounter(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


KINDS = (  # the first whose words appear in an op's name takes its time
    ("convolution", ("conv",)),
    ("attention", ("attention", "sdpa", "flash")),
    ("matmul", ("mm", "matmul", "linear")),
    ("norm", ("norm",)),
    ("optimizer", ("_foreach", "adam")),
)


def op_kind(name: str) -> str:
    name = name.lower()
    return next((kind for kind, words in KINDS if any(w in name for w in words)), "other")


def time_shares(fn: Callable[[], object]) -> dict:
    """Fractions of one run of fn's op time by kind, and the step's time over its convolution
    time: how much faster the step could get if everything but convolution took no time."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        own = event.self_device_time_total if cuda else event.self_cpu_time_total
        totals[op_kind(event.key)] = totals.get(op_kind(event.key), 0.0) + own
    whole = sum(totals.values()) or 1.0
    conv = totals.get("convolution", 0.0)
    return {
        "shares": {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
        "bound_by_conv": whole / conv if conv else None,
    }


def peak_rates(
    dev: torch.device, matmul_size: int = 2048, repeats: int = 5, dtype=torch.float32
) -> dict:
    """Best FLOP/s of a square matmul and of a 3x3 conv (16 x 128 ch x 32 x 32) in `dtype`."""
    gen = torch.Generator(device=dev).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=dev).to(dtype)

    a, b = randn(matmul_size, matmul_size), randn(matmul_size, matmul_size)
    x, w = randn(16, 128, 32, 32), randn(128, 128, 3, 3)
    cases = {"matmul": lambda: torch.mm(a, b), "conv3x3": lambda: F.conv2d(x, w, padding=1)}
    rates: dict = {"dtype": str(dtype).removeprefix("torch."), "matmul_size": matmul_size}
    for name, fn in cases.items():
        flops = count_flops(fn)
        seconds = measure(fn, repeats=repeats, warmup=3)
        rates[name] = {**seconds, "flops_per_call": flops, "flops_per_s": flops / seconds["min"]}
    return rates


def _uint8_batch(batch: int, resolution: int, dev: torch.device, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, resolution, resolution), generator=gen).to(dev)


def _gan_step_kinds(r1_interval: int, pl_interval: int, r1: bool, pl: bool) -> dict[str, int]:
    """A value of the GAN's step counter for each kind of step it runs: 'plain' (no
    regulariser), 'pl' (path length only) and 'r1_pl' (both; step 0 runs every one)."""
    kinds = {"r1_pl": 0}
    for step in range(1, r1_interval * pl_interval + 2):
        does_r1, does_pl = r1 and step % r1_interval == 0, pl and step % pl_interval == 0
        if not does_r1 and not does_pl:
            kinds.setdefault("plain", step)
        elif does_pl and not does_r1:
            kinds.setdefault("pl", step)
    return kinds


def step_utilisation(
    task, batch: int, resolution: int, peak_flops_per_s: float, repeats: int, warmup: int = 1
) -> dict:
    """Counted FLOPs, median seconds and utilisation of one task's training step (amortised
    over the GAN's lazy regularisers), on device-resident uint8 batches."""
    dev = next(iter(task.engines.values())).device
    images = [_uint8_batch(batch, resolution, dev, seed=1)]

    def step() -> None:
        task.train_step(images)

    if not hasattr(task, "steps"):  # the DDPM: every step alike
        flops = count_flops(step)
        seconds = measure(step, repeats=repeats, warmup=warmup)["median"]
        per_kind, profiled = None, step
    else:
        m = task.cfg
        kinds = _gan_step_kinds(m.r1_interval, m.pl_interval, m.r1_gamma > 0, m.pl_weight > 0)
        per_kind = {}
        for kind, counter in kinds.items():

            def at(counter=counter) -> None:
                task.steps = counter
                step()

            per_kind[kind] = {
                "flops": count_flops(at),
                "seconds": measure(at, repeats=repeats, warmup=warmup)["median"],
            }

        def profiled(at: int = kinds.get("plain", 0)) -> None:  # a plain step where there is one
            task.steps = at
            step()

        flops, seconds = _amortised(per_kind, m, "flops"), _amortised(per_kind, m, "seconds")
    achieved = flops / seconds
    return {
        "flops_per_step": flops,
        "seconds_per_step": seconds,
        "images_per_s": batch / seconds,
        "achieved_flops_per_s": achieved,
        "utilisation": achieved / peak_flops_per_s,
        "time": time_shares(profiled),
        **({"per_kind": per_kind} if per_kind else {}),
    }


def _amortised(per_kind: dict, m, key: str) -> float:
    plain = per_kind.get("plain", per_kind["r1_pl"])[key]
    pl = per_kind.get("pl", {key: plain})[key]
    total = plain
    if m.pl_weight > 0:
        total += (pl - plain) / m.pl_interval
    if m.r1_gamma > 0:
        total += (per_kind["r1_pl"][key] - pl) / m.r1_interval
    return total
