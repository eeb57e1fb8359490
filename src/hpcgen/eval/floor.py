"""The data's own FID floor: what a perfect generator would score at the same N.

FID is biased upwards at small N: N images drawn from the training distribution itself score
above zero against the reference. For the synthetic toy bedrooms the floor is measured with N
held-out images (indices past the training set: the same distribution, never trained on),
prepared exactly as the shards were, against the same reference statistics. A model's FID is
read against it (FID / floor). Other datasets have no held-out images here, so no floor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from hpcgen.data.shards import preprocess, write_json_atomic
from hpcgen.data.sources import SyntheticSource
from hpcgen.eval.features import Extractor
from hpcgen.eval.reference import scores_against


def heldout_toy_bedrooms(first: int, n: int, resolution: int, resample: str) -> torch.Tensor:
    """Toy bedrooms first .. first + n - 1 as the shard writer stores them: uint8 (n, 3, R, R)."""
    source = SyntheticSource(first + n, resolution)
    images = [
        np.asarray(preprocess(source.read(image_id), resolution, resample)[0])
        for image_id in source.ids[first:]
    ]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (n, 3, R, R)


def data_floor(
    root: Path,
    manifest: dict,
    extractor: Extractor,
    ref: dict,
    n: int,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    batch: int = 64,
) -> dict | None:
    """{fid_floor, kid_floor, floor_samples} for synthetic shards, cached beside the reference
    statistics; None for data without held-out images."""
    if manifest.get("source") != "synthetic":
        return None
    path = Path(ref["path"]).with_name(Path(ref["path"]).stem + f"_floor_n{n}.json")
    if path.is_file():
        return json.loads(path.read_text())
    first = int(manifest.get("source_count", manifest["total"]))
    images = heldout_toy_bedrooms(
        first, n, manifest["resolution"], manifest.get("filter", "lanczos")
    )
    features = extractor(images, batch)
    fid, kid, _ = scores_against(features, ref, kid_subsets, kid_subset_size, seed=0)
    floor = {
        "fid_floor": fid,
        "kid_floor": kid,
        "floor_samples": n,
        "floor_images": f"toy bedrooms {first}..{first + n - 1} (held out)",
    }
    write_json_atomic(path, floor)
    return floor
