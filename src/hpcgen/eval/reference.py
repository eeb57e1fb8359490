"""Reference statistics of a dataset: computed once per (shards, resolution, extractor, N)
from the uint8 images in the shards (the training data's own preprocessing, no re-encode),
cached under a key that names all four, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from hpcgen.data.stream import real_images
from hpcgen.eval.features import Extractor
from hpcgen.eval.metrics import feature_statistics, frechet_distance, kernel_inception_distance

KID_MAX_FEATURES = 10_000  # features kept for KID and precision/recall (KID's subsets: 1000)
PRC_NEIGHBOURS = 3  # k of the k-NN balls, as StyleGAN2-ADA's pr50k3
PRC_BATCH = 2048  # rows of one block of pairwise distances (2048 x N float32 in memory)


def cache_key(manifest: dict, extractor: Extractor, n: int) -> str:
    described = {
        "shards": [(s["name"], s.get("sha256"), s["bytes"]) for s in manifest["shards"]],
        "resolution": manifest["resolution"],
        "extractor": extractor.name,
        "weights": extractor.weights_sha256,
        "n": n,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def reference_statistics(
    root: Path, manifest: dict, extractor: Extractor, n: int, batch: int = 64
) -> tuple[dict, bool]:
    """({mu, sigma, features, n, path}, loaded_from_cache)."""
    n = min(n, manifest["total"])
    key = cache_key(manifest, extractor, n)
    path = root / "fid_refs" / f"ref_{manifest['resolution']}px_{extractor.name}_n{n}_{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in ("mu", "sigma", "features")} | {"n": n, "path": path}, True
    features = extractor(real_images(root, manifest, n), batch)
    mu, sigma = feature_statistics(features)
    kept = features[:KID_MAX_FEATURES].astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, mu=mu, sigma=sigma, features=kept, key=key)
    os.replace(tmp, path)
    return {"mu": mu, "sigma": sigma, "features": kept, "n": n, "path": path}, False


def scores_against(
    features: np.ndarray, ref: dict, kid_subsets: int, kid_subset_size: int, seed: int = 0
) -> tuple[float, float, float]:
    """(FID, KID mean, KID std) of features (N, D) against reference statistics `ref`."""
    fid = frechet_distance(*feature_statistics(features), ref["mu"], ref["sigma"])
    kid_mean, kid_std = kernel_inception_distance(
        features, ref["features"], kid_subsets, kid_subset_size, seed
    )
    return fid, kid_mean, kid_std


# Kynkaanniemi et al. 2019, improved precision and recall: precision = fraction of generated
# features inside the union of the real features' k-NN balls; recall the other way round
def precision_recall(
    features: np.ndarray,
    ref_features: np.ndarray,
    k: int = PRC_NEIGHBOURS,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """(precision, recall) of generated features (N, D) against real ones (M, D), computed by
    torch-fidelity's own implementation (float32 distances, as StyleGAN2-ADA's) on our features."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    for name, f in (("generated", features), ("reference", ref_features)):
        if len(f) <= k:
            raise ValueError(
                f"precision/recall with k={k} needs more than {k} {name} features, got {len(f)}: "
                "raise eval.num_samples / eval.ref_samples or lower eval.prc_k"
            )
    device = device or torch.device("cpu")
    gen, real = (torch.as_tensor(np.asarray(f), dtype=torch.float32, device=device)
                 for f in (features, ref_features))  # fmt: skip
    out = prc_features_to_metric(
        gen, real, prc_neighborhood=k, prc_batch_size=PRC_BATCH, save_cpu_ram=True, verbose=False
    )
    # its float32 means, back to the exact fractions they are (count / set size)
    return (
        round(out["precision"] * len(gen)) / len(gen),
        round(out["recall"] * len(real)) / len(real),
    )
