"""Synthetic images, shard writing and the resumable per-rank stream, on real tar shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcgen.config import ConfigError, DataConfig
from hpcgen.data.shards import ensure_shards, read_manifest, shard_paths
from hpcgen.data.stream import ShardStream
from hpcgen.data.synthetic import toy_bedroom


def test_toy_bedroom_depends_only_on_index_and_is_not_constant():
    a, b = np.asarray(toy_bedroom(3, 32)), np.asarray(toy_bedroom(3, 32))
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, np.asarray(toy_bedroom(4, 32)))
    assert a.std() > 10  # a picture, not a flat colour


@pytest.fixture()
def shards(tmp_path):
    cfg = DataConfig(
        root=str(tmp_path / "toy"), resolution=16, num_samples=40, samples_per_shard=10
    )
    root, manifest = ensure_shards(cfg)
    return cfg, root, manifest


def test_synthetic_shards_have_a_manifest_written_last(shards):
    cfg, root, manifest = shards
    assert manifest["total"] == 40 and len(manifest["shards"]) == 4
    assert sorted(p.name for p in root.glob("*.tar")) == [f"shard-00000{i}.tar" for i in range(4)]
    assert not list(root.glob(".*.tmp"))
    assert read_manifest(root) == manifest
    assert ensure_shards(cfg)[1] == manifest  # second use reads, does not rewrite


def test_shards_written_for_other_settings_are_refused(shards):
    cfg, root, _ = shards
    other = DataConfig(root=str(root), resolution=32, num_samples=40, samples_per_shard=10)
    with pytest.raises(ConfigError, match="were written for"):
        ensure_shards(other)


def test_truncated_shard_is_reported_with_the_fix(shards):
    _, root, _ = shards
    with open(root / "shard-000002.tar", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ConfigError, match="shard-000002.tar is missing or has the wrong size"):
        read_manifest(root)


def test_stream_batches_are_images_in_range(shards):
    _, root, manifest = shards
    batch = ShardStream(shard_paths(root, manifest), batch_size=6, shuffle_buffer=8).next_batch()
    assert batch.shape == (6, 3, 16, 16) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1


def test_ranks_see_disjoint_samples_and_together_the_whole_epoch(shards):
    _, root, manifest = shards
    seen = []
    for rank in range(2):
        stream = ShardStream(shard_paths(root, manifest), 20, rank, 2, seed=5, shuffle_buffer=4)
        seen.append({tuple(x.flatten().tolist()) for x in stream.next_batch()})
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 40


def test_restored_stream_continues_exactly_across_epochs(shards):
    _, root, manifest = shards
    paths = shard_paths(root, manifest)
    a = ShardStream(paths, 7, seed=1, shuffle_buffer=5)
    for _ in range(4):  # 28 of 40 samples
        a.next_batch()
    b = ShardStream(paths, 7, seed=1, shuffle_buffer=5)
    b.load_state_dict(a.state_dict())
    for _ in range(3):  # crosses into epoch 1
        assert torch.equal(a.next_batch(), b.next_batch())
    assert a.state_dict()["epoch"] == 1


def test_more_ranks_than_shards_is_an_error(shards):
    _, root, manifest = shards
    with pytest.raises(ValueError, match="4 shard"):
        ShardStream(shard_paths(root, manifest), 2, rank=0, world_size=5)


def test_folder_source_is_cropped_and_resized(tmp_path):
    from PIL import Image

    src = tmp_path / "images" / "nested"
    src.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40 + i, 30), (10 * i, 0, 0)).save(src / f"{i}.jpg")
    (src / "notes.txt").write_text("not an image")
    cfg = DataConfig(
        name="folder",
        source=str(tmp_path / "images"),
        root=str(tmp_path / "shards"),
        resolution=8,
        samples_per_shard=2,
    )
    _, manifest = ensure_shards(cfg)
    assert manifest["total"] == 3 and len(manifest["shards"]) == 2
    batch = ShardStream(shard_paths(tmp_path / "shards", manifest), 3).next_batch()
    assert batch.shape == (3, 3, 8, 8)


def test_empty_folder_source_is_a_clear_error(tmp_path):
    cfg = DataConfig(name="folder", source=str(tmp_path), root=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="holds no images"):
        ensure_shards(cfg)
