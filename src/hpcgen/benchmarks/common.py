"""What every suite shares: repeats with a warm-up, medians, and a description of the machine."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def _timed(fn: Callable[[], object]) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Seconds per call: warm-up calls first (allocations, caches, kernel choice), then repeats."""
    return measure_in_turns({"fn": fn}, repeats, warmup)["fn"]


def measure_in_turns(
    fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1
) -> dict[str, dict]:
    """Seconds per call of functions that are compared with each other, called in turns
    (a b c a b c ...): a slow spell of a shared machine then lands on all of them alike, where
    measuring one after the other puts it on whichever block it hits and skews their ratio."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    values: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            values[key].append(_timed(fn))
    return {key: summary(v, "seconds") for key, v in values.items()}


def summary(values: list[float], unit: str) -> dict:
    """Every repeat under `unit`, and their median, min and max: the shape of every suite's row."""
    return {
        unit: values,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def machine() -> dict:
    import deepspeed

    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
