"""launch/bench.py: run one benchmark suite, print its numbers, write <run>/bench/<suite>.json."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from hpcgen.cli.compose import fail

# suite name -> module with run(workdir, **params); configs/bench.yaml holds each one's params
SUITES = {
    "data": "hpcgen.benchmarks.data",
    "sampling": "hpcgen.benchmarks.sampling",
    "engine": "hpcgen.benchmarks.engine",
    "zero": "hpcgen.benchmarks.zero",
    "peer": "hpcgen.benchmarks.peer",
    "checkpoint": "hpcgen.benchmarks.checkpoint",
    "evaluation": "hpcgen.benchmarks.evaluation",
    "gpu": "hpcgen.benchmarks.gpu",
    "quality": "hpcgen.benchmarks.quality",
    "eval_overlap": "hpcgen.benchmarks.eval_overlap",
}


def run_bench(cfg: DictConfig) -> dict[str, Any]:
    """Run one benchmark suite, print its numbers, write bench/<suite>.json in the run dir."""
    from hpcgen.benchmarks.common import machine

    if cfg.suite not in SUITES:
        fail(f"suite={cfg.suite} is unknown: choose one of {', '.join(SUITES)}")
    module = importlib.import_module(SUITES[cfg.suite])
    params = OmegaConf.to_container(cfg[cfg.suite], resolve=True)
    result = module.run(Path(cfg.workdir).expanduser(), **params)  # type: ignore[arg-type]
    result = {"suite": cfg.suite, "machine": machine(), **result}
    out = Path(HydraConfig.get().runtime.output_dir) / "bench" / f"{cfg.suite}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    table = Table(title=f"bench suite={cfg.suite} ({out})", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in _flatten(result):
        table.add_row(key, f"{value:,.4g}" if isinstance(value, float) else str(value))
    Console(width=120).print(table)
    return result


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, number) rows: medians and ratios, not the per-repeat lists."""
    rows = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("machine", "config", "targets"):
            rows += _flatten(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((name, value))
        elif key == "targets":
            rows += [(f"target {k}", v) for k, v in value.items()]
    return rows
