"""Every benchmark suite runs end to end and writes bench/<suite>.json with its machine, config,
per-repeat seconds and ratios (numbers are the benchmarks' business, not the tests')."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.slow

SUITES = {
    "data": (
        [
            "data.images=256",
            "data.resolution=16",
            "data.batch_size=32",
            "data.num_workers=1",
            "data.samples_per_shard=64",
            "data.repeats=2",
        ],
        ["stream_vs_imagefolder", "stream_vs_decode_only"],
    ),  # fmt: skip
    "sampling": (
        ["sampling.full_steps=20", "sampling.ddim_steps=5", "sampling.repeats=1"],
        ["ratio_wall", "ratio_evaluations"],
    ),
    "engine": (
        [
            "engine.ddpm_preset=tiny",
            "engine.resolution=16",
            "engine.batch=4",
            "engine.repeats=1",
            "engine.utilisation_repeats=1",
            "engine.matmul_size=256",
            "engine.utilisation.ddpm_small=['model=ddpm','model.preset=tiny',"
            "'data.resolution=16','trainer.batch_per_gpu=4']",
            "~engine.utilisation.ddpm_lsun64",
            "engine.utilisation.gan_report=['model=gan','model.preset=tiny',"
            "'data.resolution=16','trainer.batch_per_gpu=4','model.pl_weight=2']",
            "engine.compile=[ddpm_small]",
            "engine.levers.preset=tiny",
            "engine.levers.resolution=16",
            "engine.levers.repeats=1",
            "engine.levers.activation_checkpointing.preset=tiny",
            "engine.levers.activation_checkpointing.resolution=16",
            "engine.levers.activation_checkpointing.repeats=1",
        ],
        ["ddpm_zero1_vs_plain", "ddpm_zero2_vs_plain", "gan_zero2_vs_plain", "utilisation"],
    ),
    "zero": (["zero.preset=tiny", "zero.resolution=16", "zero.stages=[3]"], ["zero3"]),
    "peer": (
        [
            "peer.preset=tiny",
            "peer.resolution=16",
            "peer.batch=4",
            "peer.repeats=1",
            "peer.matmul_size=256",
        ],
        [
            "hpcgen_plain_vs_diffusers",
            "hpcgen_zero2_vs_diffusers",
            "hpcgen_stage0_vs_diffusers",
            "parameter_ratio",
            "utilisation",
            "flops_per_step",
        ],
    ),
    "gpu": (  # on the CPU: tiny cases in fp32, the same code path as on a GPU
        [
            "gpu.cases=[ddpm:tiny:16:4,gan:tiny:16:4]",
            "gpu.precision=fp32",
            "gpu.repeats=1",
            "gpu.matmul_size=256",
            "gpu.loader_images=64",
            "gpu.loader_workers=1",
        ],
        ["peak", "ddpm:tiny:16:4", "gan:tiny:16:4"],
    ),  # fmt: skip
    "checkpoint": (
        [
            "checkpoint.presets=[ddpm:tiny]",
            "checkpoint.repeats=1",
            "checkpoint.signal_presets=[ddpm:tiny]",
            "checkpoint.signal_repeats=1",
        ],
        ["ddpm:tiny", "preemption"],
    ),  # fmt: skip
    "evaluation": (
        ["evaluation.extractor=tiny-test", "evaluation.images=16", "evaluation.repeats=1"],
        ["reference_cached_vs_fresh", "features_images_per_s"],
    ),
    "quality": (  # a few seconds of each model on the smoke settings, the tiny-test extractor
        [
            "quality.minutes=0.05",
            "quality.points=1",
            "quality.samples=16",
            "quality.extractor=tiny-test",
            'quality.ddpm=["experiment=smoke"]',
            'quality.gan=["experiment=smoke"]',
        ],
        ["ddpm", "gan", "diffusers_peer", "ddpm_vs_peer_fid_over_floor"],
    ),  # fmt: skip
}


def _bench_process(
    suite: str, overrides: list[str], workdir: Path, run: str = "run", timeout: int = 600
) -> subprocess.CompletedProcess:
    """launch/bench.py in its own process, its run directory workdir/run."""
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "bench.py"), f"suite={suite}", *overrides,
         f"workdir={workdir}", f"hydra.run.dir={workdir / run}"],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _bench(
    suite: str, overrides: list[str], workdir: Path, run: str = "run", timeout: int = 600
) -> tuple[subprocess.CompletedProcess, dict]:
    """launch/bench.py, which must succeed: (its process, the JSON it wrote under workdir/run)."""
    result = _bench_process(suite, overrides, workdir, run, timeout)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result, json.loads((workdir / run / "bench" / f"{suite}.json").read_text())


@pytest.mark.parametrize("suite", SUITES)
def test_suite_writes_its_json(suite, tmp_path):
    overrides, keys = SUITES[suite]
    process, data = _bench(suite, overrides, tmp_path)
    assert data["suite"] == suite and data["machine"]["torch"]
    assert all(key in data for key in keys), sorted(data)
    assert f"bench suite={suite}" in process.stdout
    if suite == "gpu":  # the U-Net's FLOPs were counted and set against the measured peak
        for case in ("ddpm:tiny:16:4", "gan:tiny:16:4"):
            assert data[case]["flops_per_step"] > 0 and data[case]["utilisation"] > 0
        assert data["gan:tiny:16:4"]["loader_headroom"] > 0
    if suite == "engine":  # each step's FLOPs against the matmul rate of this run
        peak = data["peak"]["matmul"]["flops_per_s"]
        for case in data["utilisation"].values():
            assert case["flops_per_step"] > 0 and 0 < case["utilisation"] < 1.5
            assert case["achieved_flops_per_s"] == pytest.approx(case["utilisation"] * peak)
        levers = data["levers"]["vs_baseline"]
        assert levers["baseline"] == 1.0 and set(levers) >= {"channels_last", "attention_math"}
        checkpointing = data["levers"]["activation_checkpointing"]
        assert checkpointing["on_vs_off"] > 0 and checkpointing["peak_bytes_on_vs_off"] < 1
        compiled = data["compiled"]["ddpm_small"]
        assert compiled["compile_first_step_s"] > 0 and compiled["vs_eager"] > 0
        kinds = data["utilisation"]["gan_report"]["per_kind"]  # R1 and PL steps cost more
        assert kinds["r1_pl"]["flops"] > kinds["pl"]["flops"] > kinds["plain"]["flops"]
    if suite == "quality":  # untrained point, one point after the budget, the floor beside it
        for model in ("ddpm", "gan"):
            curve = data[model]["curve"]
            assert [p["step"] for p in curve][0] == 1 and curve[-1]["step"] > 1
            assert data[model]["fid_floor"] > 0 and data[model]["untrained_fid"] > 0
        assert data["diffusers_peer"]["steps"] > 0 and data["diffusers_peer"]["fid"] > 0
        assert data["diffusers_peer"]["clip_x0"] == "recompute"  # sampled by our rule
        # a second run in the same workdir trains afresh (it once resumed the first's checkpoints)
        again = [*overrides, "quality.models=[gan]", "quality.peer=false"]
        second = _bench(suite, again, tmp_path, "again")[1]["gan"]
        assert second["run_dir"] != data["gan"]["run_dir"]
        # the same seed from scratch: the same untrained network, the same samples, the same FID
        assert second["untrained_fid"] == pytest.approx(data["gan"]["untrained_fid"], rel=1e-4)
        assert second["curve"][-1]["step"] > 1
    if suite == "checkpoint":  # a real training process saved the very step it was signalled at
        signalled = data["preemption"]["ddpm:tiny"]
        assert signalled["steps_lost_max"] == 0 and signalled["steps_after_signal_max"] <= 1


def test_quality_suite_on_a_step_budget_trains_ours_and_the_peer_equal_steps(tmp_path):
    quick = [o for o in SUITES["quality"][0] if not o.startswith("quality.minutes")]
    overrides = [*quick, "quality.steps=5", "quality.points=2", "quality.models=[ddpm]"]
    run, data = _bench("quality", overrides, tmp_path)
    assert data["config"]["budget"] == "steps"
    # the many silent minutes of a real run say what they are doing, with each FID as it lands
    fid = data["ddpm"]["fid"]
    assert f"[quality] ddpm step 5: FID {fid:.1f} (floor " in run.stderr, run.stderr[-3000:]
    assert "[quality] diffusers peer step 5 loss " in run.stderr  # smoke logs every 5 steps
    assert f"[quality] diffusers peer step 5: FID {data['diffusers_peer']['fid']:.1f}" in run.stderr
    assert [p["step"] for p in data["ddpm"]["curve"]] == [1, 3, 5]  # equal slices of 4 steps
    assert data["diffusers_peer"]["steps"] == 5 and data["diffusers_peer"]["fid"] > 0
    bad = _bench_process(
        "quality", [*quick, "quality.steps=2", "quality.points=2"], tmp_path, "bad"
    )
    assert bad.returncode != 0 and "quality.steps=2 is not valid" in bad.stderr, bad.stderr[-2000:]
    assert len(list((tmp_path / "quality").iterdir())) == 1  # refused before training anything


def test_checkpointing_lever_times_and_counts_memory_each_way():
    from hpcgen.benchmarks.levers import measure_checkpointing

    row = measure_checkpointing("tiny", 16, 2, repeats=2, dev=torch.device("cpu"))
    assert len(row["on_vs_off_per_turn"]["ratios"]) == 2 and row["on_vs_off"] > 0
    off, on = row["memory"]["off"], row["memory"]["on"]
    assert on["peak_bytes"] < off["peak_bytes"] and on["saved_tensors"] < off["saved_tensors"]
    assert row["peak_bytes_on_vs_off"] == on["peak_bytes"] / off["peak_bytes"]


def test_the_peer_network_has_our_parameter_count_within_ten_percent():
    from hpcgen.benchmarks.peer import matched_peer
    from hpcgen.models.unet import build_unet

    for preset, resolution in (("tiny", 16), ("small", 32)):
        ours = sum(p.numel() for p in build_unet(preset, 3, resolution).parameters())
        peer, _ = matched_peer(preset, resolution, ours)
        assert abs(sum(p.numel() for p in peer.parameters()) / ours - 1) <= 0.1


def test_sampling_suite_reports_the_fid_of_each_sampler_on_a_trained_model(tmp_path):
    from tests.conftest import run_train

    done = run_train(["experiment=smoke", f"hydra.run.dir={tmp_path / 'ddpm'}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = tmp_path / "ddpm" / "checkpoints" / "step_00000020"
    overrides = ["sampling.full_steps=20", "sampling.ddim_steps=5", "sampling.repeats=1",
                 f"sampling.fid_ckpt={ckpt}", "sampling.fid_samples=16",
                 "sampling.fid_extractor=tiny-test"]  # fmt: skip
    fid = _bench("sampling", overrides, tmp_path, timeout=900)[1]["fid"]
    assert fid["samples"] == 16 and fid["ckpt"] == str(ckpt)
    assert fid["ddpm"] > 0 and fid["ddim5"] > 0 and fid["ddpm"] != fid["ddim5"]


def test_compared_steps_are_timed_in_turns_after_their_warm_ups():
    from hpcgen.benchmarks.common import measure_in_turns

    calls: list[str] = []
    out = measure_in_turns({k: (lambda k=k: calls.append(k)) for k in "ab"}, repeats=3, warmup=2)
    assert calls == list("ab" * 5), "warm-ups a b a b, then the measured calls a b a b a b"
    assert [len(out[k]["seconds"]) for k in "ab"] == [3, 3]
    assert all(out[k]["min"] <= out[k]["median"] <= out[k]["max"] for k in "ab")


@pytest.mark.slurm
def test_eval_overlap_suite_trains_with_evaluation_off_and_on_on_slurm(slurm_cluster, tmp_path):
    overrides = ("['model=gan','experiment=smoke','trainer.max_steps=40',"
                 "'trainer.log_every_steps=5','trainer.ckpt_every_steps=20',"
                 "'trainer.ckpt_milestone_every_steps=20',"
                 "'eval.cpus_per_task=1','eval.settings={extractor:tiny-test,num_samples:16,"
                 "ref_samples:32,kid_subsets:2,kid_subset_size:16}']")  # fmt: skip
    data = _bench(
        "eval_overlap",
        [f"eval_overlap.overrides={overrides}", "eval_overlap.repeats=1"],
        tmp_path,
        timeout=900,
    )[1]
    assert data["images_per_s_on"] > 0 and data["images_per_s_off"] > 0 and data["on_vs_off"] > 0
    on = tmp_path / "eval_overlap"
    (sweep_on,) = [p for p in on.iterdir() if "-on-" in p.name]
    assert sorted(p.name for p in (sweep_on / "0" / "eval").glob("step_*.json")) == [
        "step_00000020.json",
        "step_00000040.json",
    ], "both milestones were evaluated while (or right after) training ran"
    assert data["runs"]["on"][0]["pending_after_s"] == 0
    (sweep_off,) = [p for p in on.iterdir() if "-off-" in p.name]
    assert not list((sweep_off / "0" / "eval").glob("step_*.json"))
