"""Every benchmark suite runs end to end and writes bench/<suite>.json with its machine, config,
per-repeat seconds and ratios (numbers are the benchmarks' business, not the tests')."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

SUITES = {
    "sampling": (
        ["sampling.full_steps=20", "sampling.ddim_steps=5", "sampling.repeats=1"],
        ["ratio_wall", "ratio_evaluations"],
    ),
    "engine": (
        ["engine.ddpm_preset=tiny", "engine.resolution=16", "engine.batch=4", "engine.repeats=1"],
        ["ddpm_zero1_vs_plain", "ddpm_zero2_vs_plain", "gan_zero2_vs_plain"],
    ),
    "zero": (["zero.preset=tiny", "zero.resolution=16", "zero.stages=[3]"], ["zero3"]),
    "checkpoint": (["checkpoint.presets=[ddpm:tiny]", "checkpoint.repeats=1"], ["ddpm:tiny"]),
    "evaluation": (
        ["evaluation.extractor=tiny-test", "evaluation.images=16", "evaluation.repeats=1"],
        ["reference_cached_vs_fresh", "features_images_per_s"],
    ),
}


@pytest.mark.parametrize("suite", SUITES)
def test_suite_writes_its_json(suite, tmp_path):
    overrides, keys = SUITES[suite]
    result = subprocess.run(
        [sys.executable, str(REPO / "launch" / "bench.py"), f"suite={suite}", *overrides,
         f"workdir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    data = json.loads((tmp_path / "run" / "bench" / f"{suite}.json").read_text())
    assert data["suite"] == suite and data["machine"]["torch"]
    assert all(key in data for key in keys), sorted(data)
    assert f"bench suite={suite}" in result.stdout
