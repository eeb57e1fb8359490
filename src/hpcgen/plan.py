"""What a training job will cost before it runs (`launch/train.py ... dry_run=true`): the images
it trains on, the checkpoints it saves and keeps, and its device-hours to `trainer.max_steps`
projected from a measured training rate, scaled by the FLOPs of one image's training step.

FLOPs are counted by torch's FlopCounterMode on the meta device (shapes only: no memory, no
compute), so a 552M-parameter U-Net is planned in about a second on any machine.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from hpcgen.config import DDPMConfig, TrainConfig
from hpcgen.engine.disk import estimated_bytes, human
from hpcgen.models.stylegan import build_gan
from hpcgen.models.unet import build_unet
from hpcgen.networks import build_networks, output_channels


@dataclass(frozen=True)
class Throughput:
    """A measured training rate of one network: what projections of other networks scale."""

    model: str
    preset: str
    resolution: int
    images_per_s: float  # per device
    where: str


# README, "Two commands on a fresh machine": the quickstart's rates on 2 CPU cores in fp32 (the
# DDPM `small` at 57 img/s, the GAN `tiny` at 15-21: the slower end). No GPU figure yet.
CPU_MEASURED = {
    "ddpm": Throughput("ddpm", "small", 32, 57.0, "2 CPU cores, fp32, README's quickstart"),
    "gan": Throughput("gan", "tiny", 32, 15.0, "2 CPU cores, fp32, README's quickstart"),
}


def _fwd_bwd_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn().float().sum().backward()
    return counter.get_total_flops()


def train_flops_per_image(model: str, preset: str, resolution: int, out_channels: int = 3) -> int:
    """FLOPs of one image's training step. DDPM: the U-Net's forward and backward. GAN: the G
    step (D(G(z)) forward and backward), the D step (G forward; D forward and backward on the
    fake and the real image); lazy R1 and path length are left out (a few percent)."""
    with torch.device("meta"):
        if model == "ddpm":
            net = build_unet(preset, out_channels, resolution)
            x, t = torch.randn(1, 3, resolution, resolution), torch.zeros(1, dtype=torch.long)
            return _fwd_bwd_flops(lambda: net(x, t))
        generator, discriminator = build_gan(preset, resolution)
        z = torch.randn(2, generator.z_dim)  # 2: minibatch stddev needs a group
        x = torch.randn(2, 3, resolution, resolution, requires_grad=True)
        g_step = _fwd_bwd_flops(lambda: discriminator(generator(z)))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            generator(z)
        d_step = counter.get_total_flops() + 2 * _fwd_bwd_flops(lambda: discriminator(x))
        return (g_step + d_step) // 2


def gpu_bench_throughputs(path: Path) -> list[Throughput]:
    """The training cases of `launch/bench.py suite=gpu`'s bench/gpu.json."""
    result = json.loads(Path(path).read_text())
    found = []
    for case in result.values():
        if isinstance(case, dict) and "images_per_s" in case:
            c = case["config"]
            where = f"{result.get('device', 'GPU')}, {c['precision']}, {path}"
            found.append(
                Throughput(c["model"], c["preset"], c["resolution"], case["images_per_s"], where)
            )
    return found


@dataclass(frozen=True)
class JobPlan:
    steps: int
    images: int
    parameters: dict[str, int]
    checkpoints_saved: int
    checkpoints_kept: int
    checkpoint_bytes: int
    device_hours: float
    wall_hours: float
    on_gpu: bool  # device_hours comes from a GPU measurement (else the CPU's figures)
    basis: str  # how device_hours was obtained, in words


def parameter_counts(cfg: TrainConfig) -> dict[str, int]:
    """Parameters of the run's networks, by engine name."""
    with torch.device("meta"):
        nets = build_networks(cfg, cuda=False)
    return {k: sum(p.numel() for p in net.parameters()) for k, net in nets.items()}


def checkpoint_steps(cfg: TrainConfig) -> tuple[list[int], list[int]]:
    """(saved, kept at the end): every ckpt_every_steps and the last step; the last
    keep_last_ckpts plus every ckpt_milestone_every_steps-th (engine/checkpoint.py's rule)."""
    t = cfg.trainer
    saved = sorted({*range(t.ckpt_every_steps, t.max_steps + 1, t.ckpt_every_steps), t.max_steps})
    m = t.ckpt_milestone_every_steps
    kept = sorted({*saved[-t.keep_last_ckpts :], *(s for s in saved if m and s % m == 0)})
    return saved, kept


def plan_job(cfg: TrainConfig, world_size: int, measured: list[Throughput] = ()) -> JobPlan:
    """The cost of one job on `world_size` devices; `measured` rates (e.g. the GPU bench's) are
    preferred over the CPU figures, the same network first, else the same model FLOP-scaled."""
    m, res = cfg.model, cfg.data.resolution
    accum = cfg.deepspeed.grad_accum_steps
    global_batch = dataclasses.replace(cfg.trainer).resolve_batch(world_size, accum)
    global_batch *= world_size * accum
    images = cfg.trainer.max_steps * global_batch
    out = output_channels(m.variance) if isinstance(m, DDPMConfig) else 3
    candidates = [r for r in measured if r.model == m.name] or [CPU_MEASURED[m.name]]
    same = [r for r in candidates if (r.preset, r.resolution) == (m.preset, res)]
    ref = (same or candidates)[0]
    rate = ref.images_per_s
    if not same:
        ours = train_flops_per_image(m.name, m.preset, res, out)
        rate *= train_flops_per_image(ref.model, ref.preset, ref.resolution) / ours
    on_cpu = ref in CPU_MEASURED.values()
    basis = (
        f"{'a CPU extrapolation: ' if on_cpu else ''}{ref.model} `{ref.preset}` "
        f"{ref.resolution} px measured at {ref.images_per_s:g} img/s ({ref.where})"
        + ("" if same else f", scaled by FLOPs per image to {rate:.3g} img/s")
        + ("; no GPU measurement yet" if on_cpu else "")
    )
    saved, kept = checkpoint_steps(cfg)
    params = parameter_counts(cfg)
    device_hours = images / rate / 3600
    return JobPlan(
        steps=cfg.trainer.max_steps,
        images=images,
        parameters=params,
        checkpoints_saved=len(saved),
        checkpoints_kept=len(kept),
        checkpoint_bytes=len(kept) * estimated_bytes(params),
        device_hours=device_hours,
        wall_hours=device_hours / world_size,
        on_gpu=not on_cpu,
        basis=basis,
    )


def describe(plan: JobPlan, world_size: int) -> str:
    """Three lines for a dry run."""
    params = ", ".join(f"{k} {v:,}" for k, v in plan.parameters.items())
    unit = "GPU-hours" if plan.on_gpu else "device-hours at the CPU's rate"
    return (
        f"{plan.steps:,} steps, {plan.images / 1e6:.3g}M images; {params} parameters\n"
        f"checkpoints: {plan.checkpoints_saved:,} saved, {plan.checkpoints_kept} kept "
        f"({human(plan.checkpoint_bytes)} estimated)\n"
        f"projected: {_hours(plan.device_hours)} {unit}, {_hours(plan.wall_hours)} h on "
        f"{world_size} device(s) at perfect scaling ({plan.basis})"
    )


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 10 else f"{h:.2g}" if h > 0 else "0"
