"""What every suite shares: repeats with a warm-up, medians, and a description of the machine."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def measure(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Seconds per call: warm-up calls first (allocations, caches, kernel choice), then repeats."""
    for _ in range(warmup):
        fn()
    values = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        values.append(time.perf_counter() - start)
    return summary(values, "seconds")


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
