"""Quality suite: what each model learns on the embedded toy bedrooms in a fixed CPU budget.

Each model trains for `minutes` of wall time in `points` chunks (a resumed run is bitwise the
uninterrupted one, so the chunks are one run); after each chunk its newest checkpoint is
evaluated with the staged Inception: FID and KID of `samples` generated images (EMA weights;
DDIM-50 / psi = 1) against the training images, beside the data's floor (the FID of as many
held-out toy bedrooms). The first point, after one step, is the untrained FID. The diffusers
peer (UNet2DModel + DDPMScheduler at our parameter count, as the peer suite builds it, with the
same EMA) trains for the same minutes on the same images and is measured the same way.
With `steps` set, the budget is that many training steps instead (the slices are equal in steps,
the peer trains as many): the same images seen on any machine, so a result from a slower or a
faster machine compares, where minutes do not.
Targets (2 cores, 30 minutes a model): DDPM FID <= 3x floor, GAN <= 5x floor, both <= 0.3x
their untrained FID; ours / floor <= the peer's.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from hpcgen.config import TrainConfig
from hpcgen.config.compose import compose_jobs, resolve_plain
from hpcgen.data.shards import ensure_shards, shard_paths
from hpcgen.data.stream import ShardStream, to_unit_range
from hpcgen.engine.ema import EMA, ddpm_ema_beta
from hpcgen.engine.loop import train
from hpcgen.engine.run_dir import checkpoint_dir, checkpoint_path, result_path
from hpcgen.eval.evaluate import EvalConfig, evaluate_checkpoint, to_uint8
from hpcgen.eval.features import Extractor, build_extractor
from hpcgen.eval.floor import data_floor
from hpcgen.eval.inception import weights_dir
from hpcgen.eval.reference import reference_statistics, scores_against

TARGETS = {"ddpm": 3.0, "gan": 5.0}  # FID / floor at 30 minutes on 2 cores
PROBE_STEPS = 50  # two probes (this many steps, then twice as many) size the first slice


def _say(message: str) -> None:
    """A progress line on stderr: the suite trains and evaluates for many silent minutes."""
    print(f"[quality] {message}", file=sys.stderr, flush=True)


def _config(overrides: list[str], max_steps: int, run_dir: Path | None = None) -> TrainConfig:
    """The composed train config; with run_dir, also saved where Hydra would keep it (evaluation
    rebuilds the network from <run>/.hydra/config.yaml)."""
    (cfg,) = compose_jobs([*overrides, f"trainer.max_steps={max_steps}"], "train")
    plain = resolve_plain(cfg)
    if run_dir is not None:
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(plain), run_dir / ".hydra" / "config.yaml")
    return TrainConfig.from_dict(plain)


def _point(ecfg: EvalConfig, run_dir: Path, step: int, seconds: float) -> dict:
    ckpt = checkpoint_path(checkpoint_dir(run_dir), step)
    result = result_path(ckpt)
    entry = {"run_dir": str(run_dir), "ckpt": str(ckpt), "step": step, "result": str(result)}
    _say(f"{run_dir.name} step {step}: FID and KID of {ecfg.num_samples} samples")
    r = evaluate_checkpoint(entry, ecfg, force=True)
    floor = "-" if r.get("fid_floor") is None else f"{r['fid_floor']:.2f}"
    _say(f"{run_dir.name} step {step}: FID {r['fid']:.1f} (floor {floor}), {r['seconds']:.0f} s")
    keep = ("fid", "kid_mean", "fid_floor", "seconds")
    return {"step": step, "train_seconds": seconds} | {k: r.get(k) for k in keep}


def train_and_measure(
    overrides: list[str],
    run_dir: Path,
    minutes: float,
    points: int,
    ecfg: EvalConfig,
    steps: int | None = None,
) -> list[dict]:
    """FID after 1 step, then after each of `points` equal slices of the budget (`minutes` of
    training, or `steps` steps when given)."""
    train(_config(overrides, 1, run_dir), run_dir)
    curve = [_point(ecfg, run_dir, 1, 0.0)]
    if steps is not None:
        step, spent = 1, 0.0
        for k in range(1, points + 1):
            goal = 1 + (steps - 1) * k // points
            step, spent, _ = _train_for(overrides, run_dir, step, goal - step, spent)
            curve.append(_point(ecfg, run_dir, step, spent))
        return curve
    # Every resume costs a fixed start-up (engine, data, checkpoint) besides its steps. Two timed
    # probes of different length separate the two: a single probe made the first slice of the
    # DDPM 7 minutes where it should have been 15; before it, a guess of 10 steps/s made the
    # GAN's about 20.
    step, spent, short = _train_for(overrides, run_dir, 1, PROBE_STEPS, 0.0)
    step, spent, long = _train_for(overrides, run_dir, step, 2 * PROBE_STEPS, spent)
    per_step = max((long - short) / PROBE_STEPS, long / (4 * PROBE_STEPS))
    startup = max(long - 2 * PROBE_STEPS * per_step, 0.0)
    for k in range(1, points + 1):
        goal = minutes * 60 * k / points
        steps = max(int((goal - spent - startup) / per_step), 1)
        step, spent, took = _train_for(overrides, run_dir, step, steps, spent)
        per_step = max((took - startup) / steps, per_step / 4)
        curve.append(_point(ecfg, run_dir, step, spent))
    return curve


def _train_for(
    overrides: list[str], run_dir: Path, step: int, steps: int, spent: float
) -> tuple[int, float, float]:
    """Resume to step + steps: (new step, seconds spent in all, seconds this run took)."""
    start = time.perf_counter()
    train(_config(overrides, step + steps, run_dir), run_dir)
    took = time.perf_counter() - start
    return step + steps, spent + took, took


def _peer_fid(
    cfg: TrainConfig,
    shards: list[str],
    minutes: float,
    ecfg: EvalConfig,
    extractor: Extractor,
    ref: dict,
    max_steps: int | None = None,
) -> dict:
    """diffusers' UNet2DModel + DDPMScheduler trained for `minutes` (or `max_steps` steps when
    given), sampled with DDIM-50."""
    from diffusers import DDIMScheduler, DDPMScheduler

    from hpcgen.benchmarks.peer import matched_peer
    from hpcgen.models.unet import build_unet

    m, r = cfg.model, cfg.data.resolution
    target = sum(p.numel() for p in build_unet(m.preset, 3, r).parameters())
    torch.manual_seed(cfg.seed)
    net, width = matched_peer(m.preset, r, target)
    ema = EMA(net)
    opt = torch.optim.AdamW(net.parameters(), lr=m.lr, betas=m.betas, weight_decay=0.0)
    schedule = {"linear": "linear", "cosine": "squaredcos_cap_v2"}[m.schedule]
    scheduler = DDPMScheduler(num_train_timesteps=m.diffusion_steps, beta_schedule=schedule)
    stream = ShardStream(shards, cfg.trainer.batch_per_gpu, num_workers=0)
    g = torch.Generator().manual_seed(cfg.seed)
    budget = f"{max_steps} steps" if max_steps else f"{minutes:g} minutes"
    _say(f"diffusers peer ({width} channels): training for {budget}")
    steps, start = 0, time.perf_counter()
    while steps < max_steps if max_steps else time.perf_counter() - start < minutes * 60:
        x0 = to_unit_range(stream.next_batch())
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, m.diffusion_steps, (len(x0),), generator=g)
        loss = torch.nn.functional.mse_loss(net(scheduler.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(net, ddpm_ema_beta(m.ema_decay, steps))
        steps += 1
        if steps % cfg.trainer.log_every_steps == 0:
            rate = steps * len(x0) / (time.perf_counter() - start)
            _say(f"diffusers peer step {steps} loss {loss.item():.4f} {rate:.1f} img/s")
    seconds = time.perf_counter() - start
    stream.close()
    # the same treatment of the predicted x0 as our sampler (model.clip_x0): diffusers' default,
    # clip without recomputing eps, gave our network FID 121.8 where ours (recompute) gave 145.7
    ddim = DDIMScheduler.from_config(scheduler.config, clip_sample=m.clip_x0 != "none")
    ddim.set_timesteps(50)
    recompute = m.clip_x0 == "recompute"
    _say(f"diffusers peer step {steps}: FID and KID of {ecfg.num_samples} samples")
    sampler, features = ema.module.eval(), []
    with torch.no_grad():
        for i in range(0, ecfg.num_samples, ecfg.batch):
            n = min(ecfg.batch, ecfg.num_samples - i)
            x = torch.randn(n, 3, r, r, generator=torch.Generator().manual_seed(ecfg.seed + i))
            for t in ddim.timesteps:
                out = sampler(x, t).sample
                x = ddim.step(out, t, x, use_clipped_model_output=recompute).prev_sample
            features.append(extractor(to_uint8(x.clamp(-1, 1)), ecfg.batch))
    gen = np.concatenate(features)
    fid, kid, _ = scores_against(gen, ref, ecfg.kid_subsets, ecfg.kid_subset_size)
    _say(f"diffusers peer step {steps}: FID {fid:.1f}")
    return {
        "steps": steps,
        "train_seconds": seconds,
        "fid": fid,
        "kid": kid,
        "width": width,
        "clip_x0": m.clip_x0,
    }


def run(
    workdir: Path,
    minutes: float,
    points: int,
    samples: int,
    extractor: str,
    models: list[str],
    ddpm: list[str],
    gan: list[str],
    peer: bool,
    steps: int | None = None,
) -> dict:
    if steps is not None and (not isinstance(steps, int) or steps < points + 1):
        raise SystemExit(
            f"hpcgen: error: quality.steps={steps} is not valid: use an integer of at least "
            f"quality.points + 1 = {points + 1} (step 1 is the untrained point), or null to "
            "train for quality.minutes"
        )
    ecfg = EvalConfig(
        num_samples=samples,
        ref_samples=2048,
        extractor=extractor,
        bpd_images=0,
        sampler="ddim50",
        kid_subset_size=min(1000, samples),
    )
    overrides = {"ddpm": ["model=ddpm", *ddpm], "gan": ["model=gan", *gan]}
    config = {"minutes": minutes, "steps": steps, "points": points, "samples": samples}
    config |= {"budget": "minutes" if steps is None else "steps", "extractor": extractor}
    results: dict = {"config": config | {"overrides": overrides}}
    # a fresh directory each invocation: an earlier run's checkpoints would be resumed from
    parent = workdir / "quality"
    parent.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix=time.strftime("%Y-%m-%d_%H-%M-%S_"), dir=parent))
    for model in models:
        curve = train_and_measure(overrides[model], runs / model, minutes, points, ecfg, steps)
        floor, final, untrained = curve[-1]["fid_floor"], curve[-1]["fid"], curve[0]["fid"]
        results[model] = {
            "run_dir": str(runs / model),
            "curve": curve,
            "fid": final,
            "fid_floor": floor,
            "fid_over_floor": final / floor if floor else None,
            "untrained_fid": untrained,
            "fid_over_untrained": final / untrained,
            "target_fid_over_floor": TARGETS[model],
            "met": bool(floor and final / floor <= TARGETS[model] and final / untrained <= 0.3),
        }
    if peer and "ddpm" in models:
        cfg = _config(overrides["ddpm"], 1)
        dev = torch.device("cpu")
        ext = build_extractor(extractor, weights_dir(None), dev)
        root, manifest = ensure_shards(cfg.data)
        ref, _ = reference_statistics(root, manifest, ext, ecfg.ref_samples, ecfg.batch)
        floor = data_floor(root, manifest, ext, ref, samples)
        theirs = _peer_fid(cfg, shard_paths(root, manifest), minutes, ecfg, ext, ref, steps)
        theirs["fid_over_floor"] = theirs["fid"] / floor["fid_floor"] if floor else None
        results["diffusers_peer"] = theirs
        ours = results["ddpm"]["fid_over_floor"]
        results["ddpm_vs_peer_fid_over_floor"] = ours / theirs["fid_over_floor"] if ours else None
    return results
