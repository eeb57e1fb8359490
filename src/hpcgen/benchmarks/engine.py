"""Engine suite: one DeepSpeed training step (stage 0, ZeRO-1 and 2) against a plain AdamW step
on the same network, batch and precision (target: at most 1.15x), for the DDPM U-Net and for a
GAN G+D step (non-saturating losses, no regularisers: the engine's overhead is the question).

Then utilisation: the real training step of each case in `utilisation` (the task launch/train.py
builds from those overrides, at one rank) with its FLOPs counted, against the machine's fp32
matmul rate measured in the same run (benchmarks/utilisation.py)."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from hpcgen.benchmarks.common import device, measure_in_turns
from hpcgen.benchmarks.levers import measure_levers
from hpcgen.benchmarks.utilisation import peak_rates, step_utilisation
from hpcgen.config import DeepSpeedConfig
from hpcgen.config.compose import compose_jobs, to_train_config
from hpcgen.engine.deepspeed_engine import make_engine, resolve_zero_stage
from hpcgen.engine.distributed import detect_layout, init_distributed
from hpcgen.engine.tasks import build_task
from hpcgen.models.stylegan import build_gan
from hpcgen.models.unet import build_unet


def _ddpm_steps(net, stages, batch, resolution, dev):
    x = torch.randn(batch, 3, resolution, resolution, device=dev)
    t = torch.randint(0, 1000, (batch,), device=dev)
    plain = copy.deepcopy(net).to(dev)
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-4)

    def plain_step():
        loss = plain(x, t).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    steps = {"plain": plain_step}
    for stage in stages:
        engine = make_engine(
            copy.deepcopy(net), 1e-4, (0.9, 0.999), 0.0, DeepSpeedConfig(zero_stage=stage), batch, 1
        )

        def ds_step(engine=engine):
            loss = engine(x, t).square().mean()
            engine.backward(loss)
            engine.step()

        steps[f"zero{stage}"] = ds_step
    return steps


def _gan_steps(generator, discriminator, stages, batch, resolution, dev):
    real = torch.rand(batch, 3, resolution, resolution, device=dev) * 2 - 1
    z = torch.randn(batch, generator.z_dim, device=dev)

    def one_step(g, d, g_step, d_step, g_backward, d_backward, d_plain):
        fake = g(z)
        loss_d = F.softplus(d(fake.detach())).mean() + F.softplus(-d(real)).mean()
        d_backward(loss_d)
        d_step()
        d_plain.requires_grad_(False)
        loss_g = F.softplus(-d_plain(g(z))).mean()
        g_backward(loss_g)
        g_step()
        d_plain.requires_grad_(True)

    g, d = copy.deepcopy(generator).to(dev), copy.deepcopy(discriminator).to(dev)
    opt_g, opt_d = (torch.optim.AdamW(m.parameters(), lr=2e-3, betas=(0.0, 0.99)) for m in (g, d))

    def stepper(opt):
        def step():
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    steps = {
        "plain": lambda: one_step(
            g, d, stepper(opt_g), stepper(opt_d), torch.Tensor.backward, torch.Tensor.backward, d
        )
    }
    for stage in stages:
        cfg = DeepSpeedConfig(zero_stage=stage)
        ge = make_engine(copy.deepcopy(generator), 2e-3, (0.0, 0.99), 0.0, cfg, batch, 1)
        de = make_engine(copy.deepcopy(discriminator), 2e-3, (0.0, 0.99), 0.0, cfg, batch, 1)
        steps[f"zero{stage}"] = lambda ge=ge, de=de: one_step(
            ge, de, ge.step, de.step, ge.backward, de.backward, de.module
        )
    return steps


def run(
    workdir: Path,
    ddpm_preset: str,
    gan_preset: str,
    resolution: int,
    batch: int,
    zero_stages: list[int],
    repeats: int,
    utilisation: dict[str, list[str]] | None = None,
    utilisation_repeats: int = 3,
    matmul_size: int = 2048,
    compile: list[str] | None = None,
    levers: dict | None = None,
) -> dict:
    init_distributed(detect_layout())
    dev = device()
    torch.manual_seed(0)
    result: dict = {
        "config": {
            "ddpm_preset": ddpm_preset,
            "gan_preset": gan_preset,
            "resolution": resolution,
            "batch": batch,
            "precision": "fp32",
        },  # fmt: skip
        "targets": {
            "zero0_vs_plain (what one rank runs)": "<= 1.05",
            "zeroN_vs_plain": "<= 1.15",
            "ddpm_lsun64 utilisation": ">= 0.5",
        },
    }
    cases = {
        "ddpm": _ddpm_steps(
            build_unet(ddpm_preset, 3, resolution), zero_stages, batch, resolution, dev
        ),
        "gan": _gan_steps(*build_gan(gan_preset, resolution), zero_stages, batch, resolution, dev),
    }
    for name, steps in cases.items():
        result |= _overhead(name, steps, batch, repeats)
    if utilisation:
        result["peak"] = peak = peak_rates(dev, matmul_size, repeats=5)
        result["utilisation"] = {
            name: measure_utilisation(overrides, peak["matmul"]["flops_per_s"], utilisation_repeats)
            for name, overrides in utilisation.items()
        }
    if levers:  # one change at a time to a plain U-Net step (benchmarks/levers.py)
        result["levers"] = measure_levers(dev=dev, **levers)
    for name in compile or []:  # the same step with trainer.compile=true
        result.setdefault("compiled", {})[name] = _compiled(
            name, utilisation or {}, result, utilisation_repeats
        )
    return result


def _overhead(name: str, steps: dict, batch: int, repeats: int) -> dict:
    """One case's step timings in turns, each engine's against the plain step."""
    timings = measure_in_turns(steps, repeats, warmup=2)
    result = {name: timings}
    for key in steps:
        if key != "plain":
            result[f"{name}_{key}_vs_plain"] = timings[key]["median"] / timings["plain"]["median"]
    result[f"{name}_images_per_s_plain"] = batch / timings["plain"]["median"]
    return result


def _compiled(name: str, utilisation: dict, result: dict, repeats: int) -> dict:
    """A utilisation case again with trainer.compile=true, against its eager row."""
    if name not in utilisation:
        raise SystemExit(f"hpcgen: error: engine.compile names {name}, not a case of "
                         f"engine.utilisation ({', '.join(utilisation)})")  # fmt: skip
    overrides = [*utilisation[name], "trainer.compile=true"]
    row = measure_utilisation(overrides, result["peak"]["matmul"]["flops_per_s"], repeats)
    row["vs_eager"] = row["images_per_s"] / result["utilisation"][name]["images_per_s"]
    return row


def measure_utilisation(overrides: list[str], peak_flops_per_s: float, repeats: int) -> dict:
    """FLOPs, seconds and utilisation of the training step launch/train.py would run with these
    overrides (one rank; trainer.batch_per_gpu among them sets the batch)."""
    (composed,) = compose_jobs([*overrides, "trainer.global_batch=null"], "train")
    cfg = to_train_config(composed)
    cfg.deepspeed.zero_stage, _ = resolve_zero_stage(cfg.deepspeed, 1, None)  # as train() does
    task = build_task(cfg, 0, 1)
    compile_s = None
    if cfg.trainer.compile:  # the first step compiles: timed apart from the measured ones
        started = time.perf_counter()
        task.train_step([torch.zeros(cfg.trainer.batch_per_gpu, 3, cfg.data.resolution,
                                     cfg.data.resolution, dtype=torch.uint8)])  # fmt: skip
        compile_s = time.perf_counter() - started
    row = step_utilisation(
        task, cfg.trainer.batch_per_gpu, cfg.data.resolution, peak_flops_per_s, repeats
    )
    if compile_s is not None:
        row["compile_first_step_s"] = compile_s
    parameters = sum(task.parameters.values())
    return {"overrides": overrides, "parameters": parameters, **row}
