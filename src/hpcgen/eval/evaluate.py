"""Post-hoc evaluation of committed checkpoints: a manifest of what to evaluate, and one task
per checkpoint (FID, KID, sample grid, interpolation) whose result file appears atomically.

A task is idempotent: a finished result is kept unless forced, a killed task leaves no
partial file, and a new manifest lists only checkpoints without a result.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

from hpcgen.config import ConfigError, DDPMConfig, TrainConfig
from hpcgen.data.shards import ensure_shards, read_manifest, write_json_atomic
from hpcgen.data.stream import to_unit_range
from hpcgen.diffusion.gaussian import DECODER_CDFS
from hpcgen.engine.generate import load_network_described, run_config
from hpcgen.engine.run_dir import (
    checkpoint_dir,
    committed_checkpoints,
    eval_entry,
    eval_figure_path,
    eval_manifest_path,
    result_path,
    result_paths,
    step_of,
)
from hpcgen.engine.run_record import read_run
from hpcgen.eval.features import EXTRACTORS, Extractor, build_extractor
from hpcgen.eval.floor import data_floor
from hpcgen.eval.inception import weights_dir
from hpcgen.eval.plot import line_plot
from hpcgen.eval.protocol import (
    EVAL_PSI,
    PRC_FEATURES_NOTE,
    data_used,
    generation,
    sampler_of,
    summary,
)
from hpcgen.eval.reference import (
    PRC_NEIGHBOURS,
    precision_recall,
    real_images,
    reference_statistics,
    scores_against,
)
from hpcgen.networks import sample
from hpcgen.seeds import image_seeds

SELECT = "latest | milestones | all | step_N"


@dataclass
class EvalConfig:
    """eval.* of configs/evaluate.yaml (cli/evaluate.py's EvaluateSchema) and eval.settings."""

    num_samples: int = 50_000  # generated images per checkpoint, as published FIDs use
    ref_samples: int = 50_000  # real images for the reference statistics (capped at the dataset)
    extractor: str = "inception"  # inception | tiny-test (a tiny random net: not comparable)
    weights_dir: str | None = None  # $HPCGEN_WEIGHTS or ~/.cache/hpcgen/weights (stage_weights)
    sampler: str | None = None  # DDPM; default ddim50
    batch: int = 64
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    prc_k: int = PRC_NEIGHBOURS  # precision/recall's k-NN balls (StyleGAN2-ADA's pr50k3: 3)
    seed: int = 0
    interp_steps: int = 8
    bpd_images: int = 256  # DDPM: full-chain bits/dim of this many real images (0: skip)
    bpd_root: str | None = None  # held-out shards (launch/prepare.py); default: training's
    bpd_decoder_cdf: str | None = None  # L_0's CDF: tanh (published) | exact; null: the model's

    def __post_init__(self) -> None:
        if self.extractor not in EXTRACTORS:
            raise ConfigError(
                f"eval.extractor={self.extractor!r} is not valid: choose one of "
                f"{', '.join(EXTRACTORS)}"
            )
        for name in ("num_samples", "ref_samples", "batch", "kid_subsets", "kid_subset_size"):
            if getattr(self, name) < 2:
                raise ConfigError(f"eval.{name}={getattr(self, name)} must be at least 2")
        if not 1 <= self.prc_k < min(self.num_samples, self.ref_samples):
            raise ConfigError(
                f"eval.prc_k={self.prc_k} is not valid: use 1 <= prc_k < eval.num_samples and "
                f"eval.ref_samples ({self.num_samples}, {self.ref_samples}); 3 is pr50k3's"
            )
        if self.bpd_decoder_cdf is not None and self.bpd_decoder_cdf not in DECODER_CDFS:
            raise ConfigError(
                f"eval.bpd_decoder_cdf={self.bpd_decoder_cdf!r} is not valid: choose one of "
                f"{', '.join(DECODER_CDFS)} (tanh is what improved-diffusion's bits/dim use)"
            )


def find_runs(target: Path) -> list[Path]:
    """A run directory (has run.json), or every run below a sweep directory."""
    if (target / "run.json").is_file():
        return [target]
    runs = sorted(
        {p.parent for p in target.glob("*/run.json")}
        | {p.parent for p in target.glob("*/*/run.json")}
    )
    if not runs:
        raise ConfigError(
            f"run={target} holds no run.json, nor do its subdirectories: give a run directory "
            "or the sweep directory of a multirun"
        )
    return runs


def select_checkpoints(run_dir: Path, select: str) -> list[Path]:
    ckpts = committed_checkpoints(checkpoint_dir(run_dir))
    if select == "all" or not ckpts:
        return ckpts
    if select == "latest":
        return ckpts[-1:]
    if select == "milestones":
        every = run_config(run_dir).trainer.ckpt_milestone_every_steps
        steps = [c for c in ckpts if every and step_of(c) % every == 0]
        return steps or ckpts[-1:]
    match = re.fullmatch(r"step_(\d+)", select)
    if match:
        return [c for c in ckpts if step_of(c) == int(match.group(1))]
    raise ConfigError(f"select={select!r} is not valid: use {SELECT}")


def build_manifest(target: Path, select: str, force: bool = False) -> tuple[Path, list[dict]]:
    """eval/manifest.json under target: one entry per checkpoint still to evaluate."""
    entries = []
    for run_dir in find_runs(target):
        for ckpt in select_checkpoints(run_dir, select):
            if force or not result_path(ckpt).is_file():
                entries.append(eval_entry(ckpt))
    path = eval_manifest_path(target)
    write_json_atomic(path, {"target": str(target), "select": select, "entries": entries})
    return path, entries


def read_manifest_entry(manifest: Path, task: int) -> dict:
    try:
        entries = json.loads(manifest.read_text())["entries"]
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"manifest={manifest} is not an evaluation manifest ({err})") from err
    if not 0 <= task < len(entries):
        raise ConfigError(f"task={task} is outside the manifest's {len(entries)} entries")
    return entries[task]


def run_shards(run_dir: Path, cfg: TrainConfig) -> tuple[Path, dict]:
    """The run's shards: where run.json says they were, else where its config puts them."""
    record = read_run(run_dir) or {}
    if record.get("data_root") and Path(record["data_root"]).is_dir():
        root = Path(record["data_root"])
        return root, read_manifest(root)
    return ensure_shards(cfg.data)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 as a PNG would store it."""
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def interpolation_figure(
    cfg: TrainConfig,
    net: torch.nn.Module,
    path: Path,
    steps: int,
    seed: int,
    device: torch.device,
    real: torch.Tensor | None = None,
) -> torch.Tensor:
    """The report's Figure 10. GAN: slerp in z (row 1), lerp in w (row 2) between two seeds.
    DDPM: slerp between two x_T decoded with deterministic DDIM (eta = 0, 50 steps); row 2
    between two real images, encoded to x_T by DDIM inversion (eps-predicting networks)."""
    from hpcgen.gan.interpolate import interpolation_grid, seeded_latents, slerp

    if isinstance(cfg.model, DDPMConfig):
        from hpcgen.diffusion.gaussian import Diffusion, ddim_invert, ddim_sample, respace

        m, r = cfg.model, cfg.data.resolution
        d = respace(Diffusion.from_schedule(m.schedule, m.diffusion_steps), 50)
        ends = [
            torch.randn(1, 3 * r * r, generator=torch.Generator().manual_seed(seed + i))
            for i in (0, 1)
        ]
        if real is not None and m.parameterisation == "eps":  # row 2: two real images
            inverted = ddim_invert(d, net, real.to(device)).cpu().flatten(1)
            ends = [torch.cat([e, x[None]]) for e, x in zip(ends, inverted, strict=True)]
        x_T = slerp(ends[0], ends[1], torch.linspace(0, 1, steps))  # (rows, steps, D)
        frames = ddim_sample(
            d,
            net,
            (3, r, r),
            list(range(x_T.shape[0] * steps)),
            eta=0.0,
            parameterisation=m.parameterisation,
            variance=m.variance,
            device=device,
            x_T=x_T.reshape(-1, 3, r, r),
            clip=m.clip_x0,
        ).cpu()
    else:
        z0, z1 = (seeded_latents([seed + i], net.z_dim).to(device) for i in (0, 1))
        frames = torch.cat(
            [
                interpolation_grid(net, z0, z1, steps, "z", "slerp").float().cpu(),
                interpolation_grid(net, z0, z1, steps, "w", "lerp").float().cpu(),
            ]
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((frames.clamp(-1, 1) + 1) / 2, path, nrow=steps, padding=1)
    return frames


def _smoothness(extractor: Extractor, frames: torch.Tensor, steps: int) -> float:
    """Mean feature distance between neighbouring frames of each row (PPL-style)."""
    feats = extractor(to_uint8(frames))
    feats = feats.reshape(-1, steps, feats.shape[1])  # (rows, steps, D)
    return float(np.linalg.norm(np.diff(feats, axis=1), axis=2).mean())


def ddpm_figures(
    cfg: TrainConfig,
    net: torch.nn.Module,
    root: Path,
    manifest: dict,
    eval_dir: Path,
    name: str,
    device: torch.device,
) -> dict:
    """The noising strip (once per run) and predicted vs true noise on 4 real images."""
    from hpcgen.diffusion.figures import noising_strip, predicted_noise_figure
    from hpcgen.diffusion.gaussian import Diffusion

    m = cfg.model
    d = Diffusion.from_schedule(m.schedule, m.diffusion_steps)
    x0 = to_unit_range(real_images(root, manifest, 4))
    if not (eval_dir / "noising.png").is_file():
        noising_strip(d, x0, eval_dir / "noising.png")
    ts = tuple(int(round(f * (d.T - 1))) for f in (0.05, 0.25, 0.5, 0.75, 0.95))
    path = eval_figure_path(eval_dir.parent, name, "noise_prediction")

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return net(x.to(device), t.to(device)).float().cpu()

    mse = predicted_noise_figure(d, model, x0, path, ts, m.parameterisation, m.variance)
    return {"noise_prediction": str(path), "noise_mse_by_t": {str(k): v for k, v in mse.items()}}


def ddpm_bits_per_dim(
    cfg: TrainConfig,
    net: torch.nn.Module,
    ecfg: EvalConfig,
    root: Path,
    manifest: dict,
    device: torch.device,
) -> dict:
    """Full-chain NLL bound on eval.bpd_images images of eval.bpd_root (a held-out shard
    directory), else of the training shards (the pipeline keeps no split of its own)."""
    from hpcgen.diffusion.gaussian import Diffusion, bits_per_dim

    if ecfg.bpd_root:
        root = Path(ecfg.bpd_root).expanduser()
        manifest = read_manifest(root)
    m = cfg.model
    d = Diffusion.from_schedule(m.schedule, m.diffusion_steps)
    x0 = to_unit_range(real_images(root, manifest, ecfg.bpd_images).to(device))
    generator = torch.Generator(device=device).manual_seed(ecfg.seed)
    cdf = ecfg.bpd_decoder_cdf or m.decoder_cdf
    bpd = torch.cat(
        [
            bits_per_dim(
                d, net, x0[i : i + ecfg.batch], generator, m.parameterisation, m.variance, cdf
            )
            for i in range(0, len(x0), ecfg.batch)
        ]
    )
    return {
        "bits_per_dim": float(bpd.mean()),
        "bpd_decoder_cdf": cdf + (" (improved-diffusion's estimator)" if cdf == "tanh" else ""),
        "bpd_images": len(x0),
        "bpd_data": str(root) + ("" if ecfg.bpd_root else " (training shards)"),
    }


@torch.no_grad()
def evaluate_checkpoint(entry: dict, ecfg: EvalConfig, force: bool = False) -> dict:
    """One task: FID/KID of `num_samples` generated images against the reference, sample grid,
    interpolation figure; the result JSON appears atomically when everything is done."""
    out = Path(entry["result"])
    if out.is_file() and not force:
        return json.loads(out.read_text()) | {"skipped": True}
    start = time.time()
    ckpt, run_dir = Path(entry["ckpt"]), Path(entry["run_dir"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg, net, loaded = load_network_described(ckpt, device)
    extractor = build_extractor(ecfg.extractor, weights_dir(ecfg.weights_dir), device)
    root, manifest = run_shards(run_dir, cfg)
    ref, ref_cached = reference_statistics(root, manifest, extractor, ecfg.ref_samples, ecfg.batch)
    is_ddpm = isinstance(cfg.model, DDPMConfig)
    sampler = sampler_of(cfg, ecfg.sampler)
    gen, grid = generated_features(cfg, net, sampler, extractor, ecfg, device)
    metrics = scores(gen, ref, ecfg, device, partial(data_floor, root, manifest, extractor, ref))
    eval_dir = out.parent
    eval_dir.mkdir(parents=True, exist_ok=True)
    save_image((grid + 1) / 2, eval_figure_path(run_dir, ckpt.name, "samples"), nrow=8, padding=1)
    interp = eval_figure_path(run_dir, ckpt.name, "interp")
    real = to_unit_range(real_images(root, manifest, 2)) if is_ddpm else None
    frames = interpolation_figure(cfg, net, interp, ecfg.interp_steps, ecfg.seed, device, real)
    extra = ddpm_figures(cfg, net, root, manifest, eval_dir, ckpt.name, device) if is_ddpm else {}
    if is_ddpm and ecfg.bpd_images > 0:
        extra |= ddpm_bits_per_dim(cfg, net, ecfg, root, manifest, device)
    result = {
        "step": entry["step"],
        "ckpt": str(ckpt),
        "model": cfg.model.name,
        **metrics,
        "num_samples": len(gen),
        "ref_samples": int(ref["n"]),
        "ref_cache": str(ref["path"]),
        "ref_cached": ref_cached,
        **data_used(cfg, str(root), manifest),
        "extractor": extractor.name,
        "weights_sha256": extractor.weights_sha256,
        "feature_dim": int(gen.shape[1]),
        "comparable_to_published": extractor.comparable,
        **generation(cfg, sampler, loaded),
        "seed": ecfg.seed,
        "interpolation": str(interp),
        "interpolation_smoothness": _smoothness(extractor, frames, ecfg.interp_steps),
        **extra,
        "eval_config": asdict(ecfg),
        "device": str(device),
        "seconds": time.time() - start,
        "created": time.time(),
    }
    result["protocol"] = summary(result)
    write_json_atomic(out, result)
    plot_run(run_dir)
    return result


def generated_features(
    cfg: TrainConfig,
    net: torch.nn.Module,
    sampler: str | None,
    extractor: Extractor,
    ecfg: EvalConfig,
    device: torch.device,
) -> tuple[np.ndarray, torch.Tensor]:
    """Features of the images of image_seeds(ecfg.seed); the first 64 images for the grid."""
    seeds = image_seeds(ecfg.seed, ecfg.num_samples)
    features, grid = [], None
    for i in range(0, len(seeds), ecfg.batch):
        images = sample(
            cfg, net, seeds[i : i + ecfg.batch], device, sampler, EVAL_PSI, ecfg.batch, False
        )
        grid = images[:64] if grid is None else grid
        features.append(extractor(to_uint8(images), ecfg.batch))
    return np.concatenate(features), grid


def scores(gen: np.ndarray, ref: dict, ecfg: EvalConfig, device: torch.device, floor_of) -> dict:
    """FID, KID and precision/recall (k-NN balls) of generated features against the reference,
    and the data's own floor: floor_of(n, kid_subsets, kid_subset_size), None without one."""
    kid = ecfg.kid_subsets, ecfg.kid_subset_size
    fid, kid_mean, kid_std = scores_against(gen, ref, *kid, ecfg.seed)
    precision, recall = precision_recall(gen, ref["features"], ecfg.prc_k, device)
    floor = floor_of(len(gen), *kid)
    return {"fid": fid, "kid_mean": kid_mean, "kid_std": kid_std, "precision": precision,
            "recall": recall, "prc_k": ecfg.prc_k, "prc_gen_samples": len(gen),
            "prc_ref_samples": len(ref["features"]),  # the reference's kept features
            "prc_features": PRC_FEATURES_NOTE, **(floor or {}),
            "fid_over_floor": fid / floor["fid_floor"] if floor else None}  # fmt: skip


def run_results(run_dir: Path) -> list[dict]:
    results = []
    for path in result_paths(run_dir):
        try:
            results.append(json.loads(path.read_text()))
        except ValueError:
            continue  # written atomically: only a foreign file can be broken
    return sorted(results, key=lambda r: r["step"])


def plot_run(run_dir: Path) -> Path | None:
    """eval/fid_vs_step.png (the report's Figure 8) and kid_vs_step.png from the results so far."""
    results = run_results(run_dir)
    if not results:
        return None
    what = f"{results[-1]['extractor']}, {results[-1]['num_samples']} samples"
    kid = {"KID x 1e3": [(r["step"], 1e3 * r["kid_mean"]) for r in results]}
    line_plot(kid, run_dir / "eval" / "kid_vs_step.png", f"KID vs step ({what})")
    fid = {"FID": [(r["step"], r["fid"]) for r in results]}
    return line_plot(fid, run_dir / "eval" / "fid_vs_step.png", f"FID vs step ({what})")
