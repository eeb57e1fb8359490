"""Sampling suite: DDIM-50 against the full DDPM-1000 chain on one U-Net and batch: network
evaluations and wall time (target: DDIM's wall time at most 0.06 of DDPM's). With `fid_ckpt`
(a committed checkpoint of a trained DDPM), also the FID each sampler reaches from its EMA
weights against the run's data, same seeds, same extractor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hpcgen.benchmarks.common import device, measure
from hpcgen.diffusion.gaussian import Diffusion, ddim_sample, ddpm_sample, respace
from hpcgen.models.unet import build_unet


def run(
    workdir: Path,
    preset: str,
    resolution: int,
    batch: int,
    ddim_steps: int,
    repeats: int,
    full_steps: int = 1000,
    fid_ckpt: str | None = None,
    fid_samples: int = 256,
    fid_extractor: str = "inception",
) -> dict:
    dev = device()
    net = build_unet(preset, 3, resolution).to(dev).eval()
    calls = {"n": 0}

    @torch.no_grad()
    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return net(x, t)

    full = Diffusion.from_schedule("linear", full_steps)
    fast = respace(full, ddim_steps)
    seeds, shape = list(range(batch)), (3, resolution, resolution)
    out = {}
    for name, fn in {
        "ddpm_full": lambda: ddpm_sample(full, model, shape, seeds, device=dev),
        f"ddim{ddim_steps}": lambda: ddim_sample(fast, model, shape, seeds, device=dev),
    }.items():
        calls["n"] = 0
        fn()
        evaluations = calls["n"]
        out[name] = {"network_evaluations": evaluations, **measure(fn, repeats, warmup=0)}
    ddim = out[f"ddim{ddim_steps}"]
    if fid_ckpt:
        samplers = ["ddpm", f"ddim{ddim_steps}"]  # the model's own full chain, and DDIM
        out["fid"] = sampler_fids(Path(fid_ckpt).expanduser(), samplers, fid_samples,
                                  fid_extractor, batch)  # fmt: skip
    return {
        "config": {
            "preset": preset,
            "resolution": resolution,
            "batch": batch,
            "full_steps": full_steps,
        },
        **out,
        "ratio_wall": ddim["median"] / out["ddpm_full"]["median"],
        "ratio_evaluations": ddim["network_evaluations"] / out["ddpm_full"]["network_evaluations"],
        "targets": {"ratio_wall": "<= 0.06"},
    }


@torch.no_grad()
def sampler_fids(ckpt: Path, samplers: list[str], n: int, extractor_name: str, batch: int) -> dict:
    """FID of n images per sampler from the checkpoint's EMA U-Net (seeds 0..n-1 for each)."""
    from hpcgen.engine.generate import load_network
    from hpcgen.eval.evaluate import run_shards, to_uint8
    from hpcgen.eval.features import build_extractor
    from hpcgen.eval.inception import weights_dir
    from hpcgen.eval.metrics import feature_statistics, frechet_distance
    from hpcgen.eval.reference import reference_statistics
    from hpcgen.networks import sample

    dev = device()
    cfg, net = load_network(ckpt, dev)
    extractor = build_extractor(extractor_name, weights_dir(), dev)
    root, manifest = run_shards(ckpt.parents[1], cfg)
    ref, _ = reference_statistics(root, manifest, extractor, manifest["total"], batch)
    result = {"ckpt": str(ckpt), "samples": n, "extractor": extractor.name,
              "reference_images": int(ref["n"])}  # fmt: skip
    for sampler in samplers:
        features = [
            extractor(
                to_uint8(
                    sample(cfg, net, list(range(i, min(i + batch, n))), dev, sampler, None, batch)
                ),
                batch,
            )  # fmt: skip
            for i in range(0, n, batch)
        ]
        mu, sigma = feature_statistics(np.concatenate(features))
        result[sampler] = frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
    return result
