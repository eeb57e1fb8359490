"""The data's FID floor: held-out toy bedrooms are prepared exactly as the shards store them."""

from __future__ import annotations

import torch

from hpcgen.config import DataConfig
from hpcgen.data.shards import ensure_shards
from hpcgen.eval.features import tiny_test
from hpcgen.eval.floor import data_floor, heldout_toy_bedrooms
from hpcgen.eval.reference import real_images, reference_statistics


def test_heldout_images_are_what_the_shard_writer_would_store_for_those_indices(tmp_path):
    # the first 8 images rendered through the floor's path equal the shards' first 8, so the
    # held-out ones (past the training set) come from exactly the training distribution
    cfg = DataConfig(root=str(tmp_path / "d"), resolution=16, num_samples=64, samples_per_shard=32)
    root, manifest = ensure_shards(cfg)
    assert torch.equal(heldout_toy_bedrooms(0, 8, 16, "lanczos"), real_images(root, manifest, 8))
    heldout = heldout_toy_bedrooms(64, 8, 16, "lanczos")
    assert heldout.shape == (8, 3, 16, 16) and heldout.dtype == torch.uint8
    assert not torch.equal(heldout, real_images(root, manifest, 8))


def test_floor_is_cached_and_only_for_data_with_held_out_images(tmp_path):
    cfg = DataConfig(root=str(tmp_path / "d"), resolution=16, num_samples=64, samples_per_shard=32)
    root, manifest = ensure_shards(cfg)
    extractor = tiny_test(torch.device("cpu"))
    ref, _ = reference_statistics(root, manifest, extractor, 64)
    floor = data_floor(root, manifest, extractor, ref, 16, kid_subsets=3, kid_subset_size=16)
    assert floor["floor_samples"] == 16 and floor["fid_floor"] > 0
    assert floor["floor_images"] == "toy bedrooms 64..79 (held out)"
    cached = list((root / "fid_refs").glob("*_floor_n16.json"))
    assert len(cached) == 1
    assert data_floor(root, manifest, extractor, ref, 16) == floor  # read back, not recomputed
    assert data_floor(root, manifest | {"source": "folder"}, extractor, ref, 16) is None
