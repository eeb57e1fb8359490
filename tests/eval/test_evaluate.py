"""Evaluation on real checkpoints of a real (short) multirun: results, caching, idempotence,
atomicity, and that training improves the FID. The tiny-test extractor keeps this fast; the
staged Inception is checked for parity in test_inception.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hpcgen.config import ConfigError
from hpcgen.data.shards import read_manifest
from hpcgen.eval.evaluate import build_manifest
from hpcgen.eval.features import build_extractor, tiny_test
from hpcgen.eval.reference import reference_statistics
from tests.conftest import REPO, run_train

pytestmark = pytest.mark.slow

SMALL = [
    "eval.extractor=tiny-test",
    "eval.num_samples=32",
    "eval.ref_samples=128",
    "eval.kid_subsets=5",
    "eval.kid_subset_size=32",
    "eval.sampler=ddim5",
    "eval.interp_steps=4",
    "eval.bpd_images=2",
]


def evaluate(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "evaluate.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real two-job multirun (DDPM and GAN, 20 steps, checkpoints at 10 and 20)."""
    root = tmp_path_factory.mktemp("eval")
    result = run_train(
        ["-m", "model=ddpm,gan", "experiment=smoke", f"hydra.sweep.dir={root / 'sweep'}"], cwd=root
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return root / "sweep"


def test_local_evaluation_writes_every_result_and_a_second_run_does_nothing(sweep):
    first = evaluate(f"run={sweep}", *SMALL)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    for job, model in (("0", "ddpm"), ("1", "gan")):
        eval_dir = sweep / job / "eval"
        for step in (10, 20):
            result = json.loads((eval_dir / f"step_{step:08d}.json").read_text())
            assert result["model"] == model and result["step"] == step
            assert (
                result["num_samples"] == 32
                and result["fid"] > 0
                and np.isfinite(result["kid_mean"])
            )
            assert result["comparable_to_published"] is False
            # precision/recall (k=3) on the FID features: 32 generated vs the 128 kept real
            assert 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
            assert (result["prc_k"], result["prc_gen_samples"]) == (3, 32)
            assert result["prc_ref_samples"] == 128 and "VGG16" in result["prc_features"]
            # everything a paper's number needs beside it
            assert result["ref_samples"] == 128 and result["resolution"] == 16
            assert result["generator_weights"] == "ema" and result["kimg"] == step * 8 / 1000
            assert result["weights_sha256"] and result["feature_dim"] == 128
            assert result["train_images"] == 256 and "256 images, 16 px" in result["ref_data"]
            if model == "ddpm":
                assert (result["sampler"], result["sampler_steps"]) == ("ddim5", 5)
                assert result["ddim_eta"] == 0.0 and result["truncation_psi"] is None
            else:
                assert result["sampler"] is None and result["sampler_steps"] == 1
                assert (result["truncation_psi"], result["noise_mode"]) == (1.0, "const")
                assert result["ema"]["ema_kimg"] > 0
            assert result["protocol"].startswith("32 generated vs 128 real, 16 px, ")
            # the floor: 32 held-out toy bedrooms (indices 256..287) against the same reference
            assert result["floor_samples"] == 32 and "256..287" in result["floor_images"]
            assert 0 < result["fid_floor"] < result["fid"]
            assert result["fid_over_floor"] == pytest.approx(result["fid"] / result["fid_floor"])
            assert (eval_dir / f"step_{step:08d}_interp.png").is_file()
            assert (eval_dir / f"step_{step:08d}_samples.png").is_file()
        assert (eval_dir / "fid_vs_step.png").is_file() and (eval_dir / "kid_vs_step.png").is_file()
        if model == "ddpm":  # the report's DDPM figures
            assert (eval_dir / "noising.png").is_file()
            assert (eval_dir / "step_00000020_noise_prediction.png").is_file()
            assert len(result["noise_mse_by_t"]) == 5
            assert 0 < result["bits_per_dim"] < 16 and result["bpd_images"] == 2
            assert result["bpd_decoder_cdf"].startswith("tanh")  # the published estimator
    manifest = json.loads((sweep / "eval" / "manifest.json").read_text())
    assert len(manifest["entries"]) == 4
    assert "data floor" in first.stdout and "FID / floor" in first.stdout
    assert "P / R" in first.stdout
    second = evaluate(f"run={sweep}", *SMALL)
    assert second.returncode == 0 and "nothing to evaluate" in second.stdout
    assert json.loads((sweep / "eval" / "manifest.json").read_text())["entries"] == []


def test_dry_run_prints_the_sbatch_line_for_the_plain_array(sweep):
    result = evaluate(f"run={sweep / '1'}", "dry_run=true", "force=true", *SMALL)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = sweep / "1" / "eval" / "manifest.json"
    assert f"sbatch --array=0-1%8 slurm/eval_array.sbatch {manifest} eval.extractor=tiny-test" in (
        result.stdout
    )


def test_cached_reference_statistics_equal_fresh_ones(sweep, tmp_path):
    run = json.loads((sweep / "1" / "run.json").read_text())
    root = tmp_path / "data"
    root.symlink_to(run["data_root"])  # a second location: no cache there yet
    manifest = read_manifest(root)
    extractor = tiny_test(__import__("torch").device("cpu"))
    for cache in (root / "fid_refs").glob("*.npz"):
        cache.unlink()
    fresh, cached_first = reference_statistics(root, manifest, extractor, 100)
    again, cached_second = reference_statistics(root, manifest, extractor, 100)
    assert (cached_first, cached_second) == (False, True)
    for key in ("mu", "sigma"):
        np.testing.assert_array_equal(fresh[key], again[key])
    assert "n100" in again["path"].name and extractor.name in again["path"].name


def test_a_killed_task_leaves_no_partial_result(sweep):
    manifest, entries = build_manifest(sweep / "0", "step_10", force=True)
    result = sweep / "0" / "eval" / "step_00000010.json"
    result.unlink(missing_ok=True)  # evaluated by an earlier test of this module, or not yet
    slow = [a for a in SMALL if not a.startswith("eval.num_samples")] + ["eval.num_samples=4096"]
    task = subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "evaluate.py"), f"run={sweep / '0'}",
         f"manifest={manifest}", "task=0", *slow],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert "[evaluate] task 0" in task.stdout.readline()
    time.sleep(3)
    assert task.poll() is None, f"the task ended before the kill (exit {task.returncode})"
    task.send_signal(signal.SIGKILL)
    task.wait(timeout=30)
    assert task.returncode == -signal.SIGKILL  # killed mid-work, not finished or crashed
    assert not result.exists()
    assert not list((sweep / "0" / "eval").glob("step_00000010*.json"))


def test_missing_inception_weights_name_the_staging_command(tmp_path):
    with pytest.raises(ConfigError, match="launch/stage_weights.py"):
        build_extractor("inception", tmp_path / "nothing", __import__("torch").device("cpu"))


@pytest.mark.parametrize(
    "model,steps,extra",
    [
        ("gan", 200, []),
        # the zero-initialised ADM net learns faster with a larger lr; a short EMA follows it
        ("ddpm", 300, ["model.lr=2e-3", "model.ema_decay=0.99"]),
    ],
)
def test_a_trained_model_scores_a_much_better_fid_than_an_untrained_one(
    model, steps, extra, tmp_path
):
    result = run_train(
        ["-m", f"model={model}", "experiment=smoke", f"trainer.max_steps=1,{steps}",
         f"trainer.ckpt_every_steps={steps}", *extra, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    args = ["eval.num_samples=128", "eval.ref_samples=256", "eval.kid_subset_size=100",
            "eval.sampler=ddim10", "eval.bpd_images=0"]  # fmt: skip
    done = evaluate(f"run={tmp_path / 'sweep'}", "eval.extractor=tiny-test", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    untrained = json.loads((tmp_path / "sweep/0/eval/step_00000001.json").read_text())
    trained = json.loads((tmp_path / f"sweep/1/eval/step_{steps:08d}.json").read_text())
    assert trained["fid"] < 0.5 * untrained["fid"], (untrained["fid"], trained["fid"])
    assert trained["kid_mean"] < untrained["kid_mean"]
