"""The training stream: disjoint per rank and worker, exact resume, corrupt samples counted."""

from __future__ import annotations

import io
import tarfile

import pytest
import torch

from hpcgen.config import DataConfig
from hpcgen.data.shards import ensure_shards, shard_paths
from hpcgen.data.stream import ShardStream, to_unit_range
from hpcgen.data.tally import dataset_tally, epoch_tally


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    cfg = DataConfig(root=str(root), resolution=8, num_samples=96, samples_per_shard=12)
    root, manifest = ensure_shards(cfg)
    return shard_paths(root, manifest)


def keys(batch: torch.Tensor) -> list[bytes]:
    return [x.numpy().tobytes() for x in batch]


def test_batches_are_images_in_range(shards):
    batch = ShardStream(shards, batch_size=6, shuffle_buffer=8, hflip=True).next_batch()
    assert batch.shape == (6, 3, 8, 8) and batch.dtype == torch.uint8
    images = to_unit_range(batch)
    assert images.dtype == torch.float32 and images.min() >= -1 and images.max() <= 1
    assert images.std() > 0.1


@pytest.mark.parametrize("n_shards", [8, 3])
def test_ranks_and_workers_read_disjoint_samples_covering_the_epoch(shards, n_shards):
    # 2 ranks x 2 workers = 4 readers; with 3 shards the readers split by sample instead
    per_reader = 12 * n_shards // 4
    seen = []
    for rank in range(2):
        stream = ShardStream(shards[:n_shards], per_reader, rank, 2, seed=5, num_workers=2)
        seen += [keys(stream.next_batch()) for _ in range(2)]
    flat = [k for reader in seen for k in reader]
    assert len(flat) == len(set(flat)) == 12 * n_shards


def test_restored_stream_continues_sample_by_sample_with_two_workers(shards):
    def stream():
        return ShardStream(
            shards, 5, rank=1, world_size=2, seed=3, shuffle_buffer=7, num_workers=2, hflip=True
        )

    a = stream()
    for _ in range(9):  # 45 samples: past the first epoch of some readers
        a.next_batch()
    b = stream()
    b.load_state_dict(a.state_dict())
    for _ in range(12):
        assert torch.equal(a.next_batch(), b.next_batch())
    assert max(e for e, _ in a.state_dict()["positions"]) >= 1


def test_main_process_stream_resumes_exactly(shards):
    a = ShardStream(shards, 7, seed=1, shuffle_buffer=5)
    for _ in range(20):  # crosses the epoch of 96 samples
        a.next_batch()
    b = ShardStream(shards, 7, seed=1, shuffle_buffer=5)
    b.load_state_dict(a.state_dict())
    for _ in range(5):
        assert torch.equal(a.next_batch(), b.next_batch())


def test_changed_worker_count_restarts_at_the_next_epoch_with_a_warning(shards):
    a = ShardStream(shards, 4, num_workers=0)
    a.next_batch()
    b = ShardStream(shards, 4, num_workers=2)
    with pytest.warns(UserWarning, match="continuing from the start of epoch 1"):
        b.load_state_dict(a.state_dict())
    assert b.state_dict()["positions"] == [(1, 0), (1, 0)]


def test_corrupt_samples_are_skipped_and_counted(tmp_path, shards):
    bad = tmp_path / "bad.tar"
    with tarfile.open(shards[0]) as src, tarfile.open(bad, "w") as dst:
        images = 0
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(".img.png"):
                images += 1
                if images in (1, 3):
                    data = b"\x89PNG garbage"
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    stream = ShardStream([str(bad)], batch_size=10, shuffle_buffer=0)
    assert stream.next_batch().shape[0] == 10
    assert stream.skipped == 2


def test_each_epoch_flips_its_own_half_of_the_images():
    """Independent coins per epoch: between two epochs about half the keys change orientation
    (with a CRC, all or none of them did)."""
    import zlib

    from hpcgen.data.stream import flipped

    keys = [f"{i:08d}" for i in range(2000)]
    for epoch in (1, 2, 3):
        same = sum(flipped(0, 0, k) == flipped(0, epoch, k) for k in keys) / len(keys)
        assert 0.45 < same < 0.55, (epoch, same)

        def crc_bit(e: int, k: str) -> int:
            return zlib.crc32(f"0-{e}-{k}".encode()) & 1

        crc = sum(crc_bit(0, k) == crc_bit(epoch, k) for k in keys) / len(keys)
        assert crc in (0.0, 1.0)  # the old coin: the whole epoch agrees or toggles
    assert 0.45 < sum(flipped(0, 0, k) for k in keys) / len(keys) < 0.55


def _epoch0_states(shards, world: int, workers: int, resume_at: int | None = None) -> list[dict]:
    """Each rank's stream state once all its readers have finished epoch 0 (and not epoch 1);
    `resume_at`: restore a fresh stream from the state after that many batches first."""
    states = []
    for rank in range(world):

        def make(rank=rank):
            return ShardStream(shards, 3, rank, world, seed=11, shuffle_buffer=5,
                               num_workers=workers)  # fmt: skip

        stream, taken = make(), 0
        while min(e for e, _ in stream.positions) < 1:
            stream.next_batch()
            taken += 1
            if taken == resume_at:
                saved, stream = stream.state_dict(), make()
                stream.load_state_dict(saved)
        states.append(stream.state_dict())
        stream.close()
    return states


@pytest.mark.parametrize("n_shards", [8, 3])
def test_the_tallies_of_an_epoch_add_up_to_the_data_set_read_once(shards, n_shards):
    # 2 ranks x 2 workers: by shard (8 shards), or by sample position (3 shards < 4 readers)
    whole = dataset_tally(shards[:n_shards])
    assert whole[0] == 12 * n_shards
    states = _epoch0_states(shards[:n_shards], 2, 2)
    assert epoch_tally(states, 0) == whole
    assert epoch_tally(_epoch0_states(shards[:n_shards], 2, 2, resume_at=3), 0) == whole
    with pytest.raises(ValueError, match="rank 0 reader 0's last finished epoch is 0, not 1"):
        epoch_tally(states, 1)


def test_the_tally_catches_a_sample_read_twice_where_counts_agree(shards):
    # rank 0's share read twice and rank 1's never: the counts add up, the digest does not
    rank0, _ = _epoch0_states(shards[:8], 2, 2)
    count, total = epoch_tally([rank0, rank0], 0)
    whole = dataset_tally(shards[:8])
    assert count == whole[0] == 96 and total != whole[1]
