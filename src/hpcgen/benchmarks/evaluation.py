"""Eval suite: feature-extractor images/s, and the reference statistics of a dataset read
from the cache against computing them (target: cached at most 0.2x of fresh)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hpcgen.benchmarks.common import device, measure
from hpcgen.config import DataConfig
from hpcgen.data.shards import ensure_shards
from hpcgen.data.synthetic import toy_bedroom
from hpcgen.eval.features import build_extractor
from hpcgen.eval.inception import weights_dir
from hpcgen.eval.reference import reference_statistics


def run(
    workdir: Path, extractor: str, images: int, resolution: int, batch: int, repeats: int
) -> dict:
    dev = device()
    ext = build_extractor(extractor, weights_dir(None), dev)
    pictures = torch.stack(
        [
            torch.from_numpy(np.array(toy_bedroom(i, resolution))).permute(2, 0, 1)
            for i in range(images)
        ]
    )
    features = measure(lambda: ext(pictures, batch), repeats, warmup=1)
    root, manifest = ensure_shards(
        DataConfig(
            root=str(workdir / f"eval-shards-{resolution}px-{images}"),
            resolution=resolution,
            num_samples=images,
        )
    )

    def fresh():
        for cache in (root / "fid_refs").glob("*.npz"):
            cache.unlink()
        reference_statistics(root, manifest, ext, images, batch)

    fresh_times = measure(fresh, repeats, warmup=0)
    cached_times = measure(
        lambda: reference_statistics(root, manifest, ext, images, batch), repeats
    )
    return {
        "config": {
            "extractor": ext.name,
            "images": images,
            "resolution": resolution,
            "batch": batch,
        },
        "features": features,
        "features_images_per_s": images / features["median"],
        "reference_fresh": fresh_times,
        "reference_cached": cached_times,
        "reference_cached_vs_fresh": cached_times["median"] / fresh_times["median"],
        "targets": {"reference_cached_vs_fresh": "<= 0.2"},
    }
