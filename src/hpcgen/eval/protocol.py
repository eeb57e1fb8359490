"""What an evaluation result must name to be compared with a paper's number: how many images on
each side, which data, how they were generated (sampler and steps, truncation, noise, EMA or raw
weights, how far trained), at what resolution, and with which feature extractor (its weights'
hash). One function, so the result files, status and the report say it the same way.
"""

from __future__ import annotations

from typing import Any

from hpcgen.config import DDPMConfig, TrainConfig
from hpcgen.diffusion.gaussian import parse_sampler

DEFAULT_DDPM_SAMPLER = "ddim50"
EVAL_PSI = 1.0  # GAN truncation for FID: none, as published FIDs
GAN_NOISE_MODE = "const"  # networks.sample draws GAN images with fixed per-layer noise
PRC_FEATURES_NOTE = (
    "the FID extractor's features; StyleGAN2-ADA's pr50k3 uses VGG16 features, so compare "
    "its trends, not its values"
)


def sampler_of(cfg: TrainConfig, requested: str | None) -> str | None:
    """The sampler evaluation draws with: eval.sampler or ddim50 (DDPM); None for the GAN."""
    return (requested or DEFAULT_DDPM_SAMPLER) if isinstance(cfg.model, DDPMConfig) else None


def generation(cfg: TrainConfig, sampler: str | None, loaded: dict) -> dict[str, Any]:
    """How the generated images came about (loaded: load_network_described's description)."""
    m = cfg.model
    if isinstance(m, DDPMConfig):
        assert sampler is not None
        kind, steps = parse_sampler(sampler)
        how: dict[str, Any] = {
            "sampler": sampler,
            "sampler_steps": steps or m.diffusion_steps,
            "ddim_eta": m.ddim_eta if kind == "ddim" else None,
            "clip_x0": m.clip_x0,
            "truncation_psi": None,
            "ema": {"ema_decay": m.ema_decay},
        }
    else:
        how = {
            "sampler": None,
            "sampler_steps": 1,  # one generator forward
            "truncation_psi": EVAL_PSI,
            "noise_mode": GAN_NOISE_MODE,
            "ema": {"ema_kimg": m.ema_kimg, "ema_rampup": m.ema_rampup},
        }
    seen = loaded.get("images_seen")
    return how | {
        "generator_weights": loaded["weights"],  # ema | raw (a checkpoint without EMA)
        "kimg": None if seen is None else seen / 1000,
        "resolution": cfg.data.resolution,
    }


def data_used(cfg: TrainConfig, root: str, manifest: dict) -> dict[str, Any]:
    """The reference data (all of the shards) and how much of it the model trained on."""
    total = int(manifest["total"])
    subset = getattr(cfg.data, "max_images", None)
    return {
        "ref_data": f"{root} ({total} images, {manifest['resolution']} px)",
        "train_images": min(subset, total) if subset else total,
    }


def summary(result: dict[str, Any]) -> str:
    """One line that names the protocol, e.g. for a table or a figure's caption."""
    how = (
        f"{result['sampler']} ({result['sampler_steps']} steps, x0 {result.get('clip_x0')})"
        if result.get("sampler")
        else f"psi {result.get('truncation_psi')}, noise {result.get('noise_mode')}"
    )
    sha = str(result.get("weights_sha256", ""))[:12]
    return (
        f"{result['num_samples']} generated vs {result['ref_samples']} real, "
        f"{result['resolution']} px, {how}, {result['generator_weights']} weights, "
        f"{result['extractor']} {sha}"
    )
