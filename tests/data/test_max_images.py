"""data.max_images: training on the first N images of the shards, the same set on every rank,
worker, epoch and resume, and a clear error for a value the data cannot meet."""

from __future__ import annotations

import tarfile

import pytest
import torch

from hpcgen.config import ConfigError, DataConfig
from hpcgen.data.decode import decode_shard_image
from hpcgen.data.shards import ensure_shards, first_images
from hpcgen.data.stream import ShardStream


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    cfg = DataConfig(root=str(root), resolution=8, num_samples=96, samples_per_shard=12)
    return ensure_shards(cfg)


def keys(batch: torch.Tensor) -> set[bytes]:
    return {x.numpy().tobytes() for x in batch}


def leading_images(root, manifest, n: int, flipped: bool = False) -> set[bytes]:
    """The first n images in the manifest's shard order, read with tarfile (not the stream)."""
    images = []
    for shard in manifest["shards"]:
        with tarfile.open(root / shard["name"]) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".img.png") and len(images) < n:
                    images.append(decode_shard_image(tar.extractfile(member).read()))
    return keys(torch.stack(images)) | (keys(torch.stack(images).flip(3)) if flipped else set())


def test_the_subset_is_the_leading_shards_and_a_part_of_the_next(data):
    root, manifest = data
    shards, limits = first_images(root, manifest, 30)
    assert [s.rsplit("/", 1)[1] for s in shards] == [s["name"] for s in manifest["shards"][:3]]
    assert limits == [12, 12, 6]
    assert first_images(root, manifest, None)[1] is None  # null: every shard, whole


@pytest.mark.filterwarnings("ignore:3 shard")  # fewer shards than readers: split by sample
def test_every_epoch_of_every_reader_reads_exactly_the_first_n_images(data):
    root, manifest = data
    first = leading_images(root, manifest, 30)
    shards, limits = first_images(root, manifest, 30, readers=4)
    for epoch in range(2):
        seen: list[bytes] = []
        for rank in range(2):  # 2 ranks x 2 workers; 30 images = 7 or 8 per reader
            stream = ShardStream(shards, 1, rank, 2, seed=3, num_workers=2, limits=limits)
            stream.positions = [(epoch, 0)] * 2
            for _ in range(2 * 7):  # every reader's first 7 of the epoch
                seen += keys(stream.next_batch())
            stream.close()
        assert len(seen) == len(set(seen)) == 28 and set(seen) <= first


def test_a_resumed_subset_stream_continues_sample_by_sample(data):
    root, manifest = data
    shards, limits = first_images(root, manifest, 30)

    def stream() -> ShardStream:
        return ShardStream(shards, 4, seed=1, shuffle_buffer=5, hflip=True, limits=limits)

    a = stream()
    for _ in range(11):  # 44 samples: into the second epoch of 30
        a.next_batch()
    b = stream()
    b.load_state_dict(a.state_dict())
    for _ in range(10):
        assert torch.equal(a.next_batch(), b.next_batch())
    later = set().union(*(keys(a.next_batch()) for _ in range(20)))  # 80 more samples
    assert later <= leading_images(root, manifest, 30, flipped=True)  # none past the 30th
    assert len(later) >= 30  # each of the 30 (flipped or not), and nothing else


def test_more_images_than_the_shards_hold_or_than_readers_need_is_a_clear_error(data):
    root, manifest = data
    with pytest.raises(ConfigError, match=r"data.max_images=97 is more than the 96 images"):
        first_images(root, manifest, 97)
    with pytest.raises(ConfigError, match=r"data.max_images=3 cannot feed 4 reader\(s\)"):
        first_images(root, manifest, 3, readers=4)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "1k"])
def test_a_max_images_that_is_not_a_positive_whole_number_is_refused(bad):
    with pytest.raises(ConfigError, match=rf"data.max_images={bad!r} is not valid"):
        DataConfig(max_images=bad)


def test_preflight_refuses_a_subset_larger_than_the_synthetic_set(tmp_path):
    from hpcgen.cli.preflight import preflight

    root = tmp_path / "data"
    with pytest.raises(ConfigError, match=r"max_images=5000 is more than the 2048 images"):
        preflight([f"data.root={root}", "data.max_images=5000", f"hydra.run.dir={tmp_path}/r"])


@pytest.mark.slow
def test_a_run_on_a_subset_trains_and_its_evaluation_names_the_subset(tmp_path):
    import json

    from tests.conftest import run_train
    from tests.eval.test_evaluate import SMALL, evaluate

    args = ["experiment=smoke", "model=gan", "data.max_images=40", "trainer.max_steps=10"]
    done = run_train([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    done = evaluate(f"run={tmp_path / 'run'}", *SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "eval" / "step_00000010.json").read_text())
    assert result["train_images"] == 40 and "256 images" in result["ref_data"]
    done = run_train([*args, "data.max_images=300", f"hydra.run.dir={tmp_path / 'r2'}"], tmp_path)
    assert done.returncode == 2 and "data.max_images=300 is more than the 256 images" in done.stderr
