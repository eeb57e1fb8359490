"""Checkpoint suite: seconds and bytes to save and to load a committed checkpoint (DeepSpeed
engines with AdamW state + hpcgen state, manifest with sha256) for each network preset; and,
for real training processes (launch/train.py), the seconds from SIGUSR2 to a clean exit with a
committed checkpoint, and the steps lost (trained but not in that checkpoint; target 0)."""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from hpcgen import CHECKOUT
from hpcgen.benchmarks.common import measure, summary
from hpcgen.config import DeepSpeedConfig
from hpcgen.engine.checkpoint import CheckpointManager
from hpcgen.engine.deepspeed_engine import make_engine
from hpcgen.engine.distributed import detect_layout, init_distributed
from hpcgen.engine.run_dir import latest_step
from hpcgen.engine.run_record import last_metrics, read_run
from hpcgen.models.stylegan import build_gan
from hpcgen.models.unet import build_unet

RESOLUTION = {"tiny": 16, "small": 32, "lsun64": 64, "lsun256": 256, "stylegan2": 64}


def _networks(spec: str) -> dict:
    model, preset = spec.split(":")
    if model == "ddpm":
        return {"unet": build_unet(preset, 3, RESOLUTION[preset])}
    generator, discriminator = build_gan(preset, RESOLUTION[preset])
    return {"generator": generator, "discriminator": discriminator}


def signal_to_exit(workdir: Path, spec: str, attempt: int, after_steps: int = 5) -> dict:
    """Train in a subprocess, send SIGUSR2 once it logged `after_steps`, time its exit."""
    model, preset = spec.split(":")
    run_dir = workdir / "signal-bench" / f"{spec.replace(':', '-')}-{attempt}"
    train = CHECKOUT / "launch" / "train.py"
    args = [f"model={model}", f"model.preset={preset}", f"data.resolution={RESOLUTION[preset]}",
            "trainer.max_steps=100000", "trainer.batch_per_gpu=8", "trainer.log_every_steps=1",
            "trainer.ckpt_every_steps=100000", "trainer.sample_every_steps=100000",
            "data.num_workers=0", f"hydra.run.dir={run_dir}"]  # fmt: skip

    def logged_step() -> int:
        return last_metrics(run_dir).get("step", 0)

    env = {**os.environ, "HPCGEN_DATA_DIR": str(workdir / "signal-data")}  # shards made once
    proc = subprocess.Popen([sys.executable, str(train), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 900
    while logged_step() < after_steps:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{spec}: training did not reach step {after_steps}: "
                               f"{(proc.communicate()[1] or '')[-2000:]}")  # fmt: skip
        time.sleep(0.02)
    signalled_at = logged_step()
    start = time.perf_counter()
    proc.send_signal(signal.SIGUSR2)
    _, err = proc.communicate(timeout=600)
    seconds = time.perf_counter() - start
    record = read_run(run_dir)
    saved = latest_step(run_dir)
    if proc.returncode != 0 or record["status"] != "preempted":
        raise RuntimeError(
            f"{spec}: exit {proc.returncode}, status {record['status']}: {err[-2000:]}"
        )
    return {
        "seconds": seconds,
        "save_seconds": record["last_save_s"],
        "steps_after_signal": saved - signalled_at,
        "steps_lost": logged_step() - saved,  # trained (logged) but not checkpointed
    }


def signal_suite(workdir: Path, presets: list[str], repeats: int) -> dict:
    result = {}
    for spec in presets:
        runs = [signal_to_exit(workdir, spec, i) for i in range(repeats)]
        result[spec] = {
            "signal_to_exit": summary([r["seconds"] for r in runs], "seconds"),
            "save_seconds_median": statistics.median(r["save_seconds"] for r in runs),
            "steps_after_signal_max": max(r["steps_after_signal"] for r in runs),
            "steps_lost_max": max(r["steps_lost"] for r in runs),
        }
    return result


def run(
    workdir: Path,
    presets: list[str],
    repeats: int,
    signal_presets: list[str] | None = None,
    signal_repeats: int = 5,
) -> dict:
    init_distributed(detect_layout())
    result: dict = {
        "config": {
            "presets": presets,
            "zero_stage": 2,
            "precision": "fp32",
            "signal_presets": signal_presets or [],
        },  # fmt: skip
        "targets": {"steps_lost": "0"},
    }
    if signal_presets:  # first: fresh processes, before this one holds the CPU's memory
        result["preemption"] = signal_suite(workdir, signal_presets, signal_repeats)
    for spec in presets:
        nets = _networks(spec)
        engines = {
            k: make_engine(v, 1e-4, (0.9, 0.999), 0.0, DeepSpeedConfig(zero_stage=2), 1, 1)
            for k, v in nets.items()
        }
        ckpts = CheckpointManager(workdir / "checkpoint-bench" / spec.replace(":", "-"), 0, 1, 1)
        steps = itertools.count(1)
        saved = {}

        def save(engines=engines, ckpts=ckpts, steps=steps, saved=saved):
            saved["path"] = ckpts.save(next(steps), engines, {"step": 0})

        save_times = measure(save, repeats, warmup=1)
        size = sum(f.stat().st_size for f in saved["path"].rglob("*") if f.is_file())
        load_times = measure(
            lambda ckpts=ckpts, saved=saved, engines=engines: ckpts.load(saved["path"], engines),
            repeats,
            warmup=1,
        )
        result[spec] = {
            "parameters": sum(p.numel() for n in nets.values() for p in n.parameters()),
            "bytes": size,
            "save": save_times,
            "load": load_times,
        }
    return result
