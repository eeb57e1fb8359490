"""launch/report.py on a real trained-and-evaluated sweep, rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcgen.engine.run_dir import sample_grids
from tests.conftest import REPO, run_train
from tests.eval.test_evaluate import SMALL, evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium (tests/run.sh installs it); HPCGEN_REQUIRE_BROWSER=1 requires it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("HPCGEN_REQUIRE_BROWSER") == "1":
        pytest.fail("HPCGEN_REQUIRE_BROWSER=1 but no chromium: apt-get install chromium")
    pytest.skip("no chromium to render the report (apt-get install chromium)")


def browser(chromium: str, *args: str) -> str:
    """Run headless Chromium until the page's load handlers ran; return stdout."""
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return out.stdout


def rendered_dom(chromium: str, page: Path) -> str:
    return browser(chromium, "--dump-dom", page.as_uri())


def image_counts(dom: str) -> tuple[int, int]:
    body = re.search(r"<body([^>]*)>", dom).group(1)
    total = re.search(r'data-images-total="(\d+)"', body)
    broken = re.search(r'data-images-broken="(\d+)"', body)
    assert total and broken, f"the page's image check did not run: <body{body}>"
    return int(total.group(1)), int(broken.group(1))


def report(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "report.py"), str(path), *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both models trained (smoke, checkpoints at 10 and 20) and each checkpoint evaluated."""
    root = tmp_path_factory.mktemp("report")
    args = ["-m", "model=ddpm,gan", "experiment=smoke", "trainer.ckpt_every_steps=10"]
    done = run_train([*args, f"hydra.sweep.dir={root / 'sweep'}"], cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    done = evaluate(f"run={root / 'sweep'}", *SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "sweep"


def test_report_of_a_trained_and_evaluated_sweep_renders_every_image(sweep, chromium, tmp_path):
    done = report(sweep)
    assert done.returncode == 0, done.stderr
    page = sweep / "report.html"
    html = page.read_text()
    sources = re.findall(r'<img src="([^"]{0,40})', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(https?:|file:|/)', html), "the page must be self-contained"
    expected = 0
    for job in ("0", "1"):  # newest training grid, eval samples + interpolation, the model's figure
        expected += 3 + (1 if (sweep / job / "augment.png").is_file() else 2)
    dom = rendered_dom(chromium, page)
    assert image_counts(dom) == (expected, 0)
    for text in ("Job 0: model=ddpm", "Job 1: model=gan", "FID vs step", "D(real), D(fake)",
                 "precision and recall vs step (k=3", "Evaluation protocol",
                 "32 generated vs 128 real, 16 px, ddim5 (5 steps, x0 recompute), "
                 "ema weights"):  # fmt: skip
        assert text in dom, text
    for job in ("0", "1"):  # the history: the run's events and each committed checkpoint's FID
        run = json.loads((sweep / job / "run.json").read_text())
        assert [e["event"] for e in run["events"]] == ["started", "completed"]
        result = json.loads((sweep / job / "eval" / "step_00000020.json").read_text())
        assert "<td>step_00000020 (latest)</td>" in dom and f"<td>{result['fid']:.2f}</td>" in dom
        assert f"<td>{result['precision']:.3f}</td><td>{result['recall']:.3f}</td>" in dom
    shot = tmp_path / "report.png"
    browser(chromium, f"--screenshot={shot}", "--window-size=1400,3000", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (3000, 1400) and pixels.std() > 20  # a page, not a blank screen


def test_a_corrupt_image_and_a_failed_job_are_named_on_the_page(sweep, chromium, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    grid = sample_grids(copy / "1")[0]
    grid.write_bytes(grid.read_bytes()[:100])  # a PNG cut by a kill mid-write
    run = json.loads((copy / "0" / "run.json").read_text())
    run.update(status="failed", error="RuntimeError: loss is NaN at step 13")
    (copy / "0" / "run.json").write_text(json.dumps(run))
    (copy / "0" / "train.log").write_text("step 12 ok\nTraceback: loss is NaN at step 13\n")
    done = report(copy, "--out", str(tmp_path / "r.html"))
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "r.html").read_text()
    assert f"cannot show training samples (EMA), step_00000020: {grid}" in page
    # an image the browser cannot decode is counted and named in a banner
    first = re.search(r'data:image/png;base64,[^"]+', page).group(0)
    (tmp_path / "r.html").write_text(page.replace(first, "data:image/png;base64,AAAA", 1))
    dom = rendered_dom(chromium, tmp_path / "r.html")
    total, broken = image_counts(dom)
    assert broken == 1 and total > 1
    assert re.search(r'id="broken-images"[^>]*>1 of \d+ images failed to load: \w', dom)
    assert "failed: RuntimeError: loss is NaN at step 13" in dom
    assert "Traceback: loss is NaN at step 13" in dom  # the log's tail


def test_report_of_a_directory_without_runs_is_a_clear_error(tmp_path):
    done = report(tmp_path)
    assert done.returncode == 2
    assert "holds no run" in done.stderr and str(tmp_path) in done.stderr
