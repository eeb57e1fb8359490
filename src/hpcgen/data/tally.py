"""What the stream's readers consumed, per epoch: a count and an order-free digest.

Each reader tallies the samples it consumed in its current epoch, as a count and the sum mod
2^64 of a hash of each sample's shard and key, and keeps the tally of the epoch it finished
last; both are checkpointed with the stream's position. Over all readers of all ranks, an
epoch's counts add up to the data set and its digests to the data set's digest exactly when
every sample was read once: a duplicate and a gap do not cancel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from hpcgen.data.tar import tar_samples


def sample_digest(url: str, key: str) -> int:
    """A sample's 64-bit hash: its shard's file name (not the path: hosts may mount the data
    elsewhere) and its key."""
    name = f"{url.rsplit('/', 1)[-1]}/{key}".encode()
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "little")


def digest(hashes: Iterator[int]) -> int:
    """The order-free digest of a set of samples: the sum of their hashes mod 2^64."""
    return sum(hashes) % (1 << 64)


def dataset_tally(shards: list[str], limits: list[int] | None = None) -> tuple[int, int]:
    """(samples, digest) of the whole data set, read straight from the shards: what the
    finished tallies of one epoch add up to over every reader of every rank."""
    caps = None if limits is None else dict(zip(shards, limits, strict=True))

    def fail(err: Exception) -> bool:
        raise err

    found = [
        sample_digest(s["__url__"], s["__key__"])
        for s in tar_samples(iter({"url": u} for u in shards), fail, caps)
    ]
    return len(found), digest(iter(found))


def epoch_tally(states: list[dict], epoch: int) -> tuple[int, int]:
    """(samples, digest) of `epoch` over the streams' state_dicts of every rank; every reader
    must have finished that epoch last (ValueError otherwise: run further, or look earlier)."""
    count, total = 0, 0
    for rank, state in enumerate(states):
        for reader, tally in enumerate(state["tallies"]):
            last = tally["finished"] and tally["finished"][0]
            if last != epoch:
                raise ValueError(f"rank {rank} reader {reader}'s last finished epoch is {last}, "
                                 f"not {epoch}")  # fmt: skip
            count, total = count + tally["finished"][1], total + tally["finished"][2]
    return count, total % (1 << 64)


class Tally:
    """Samples a reader consumed in its current epoch (count, digest), and its last finished
    epoch's: [epoch, count, digest], or None before the first ends."""

    def __init__(self, count: int = 0, total: int = 0, finished: list[int] | None = None):
        self.count, self.digest, self.finished = count, total, finished

    def add(self, sample: dict) -> None:
        self.count += 1
        self.digest = (self.digest + sample_digest(sample["__url__"], sample["__key__"])) % (
            1 << 64
        )

    def finish(self, epoch: int) -> None:
        self.finished, self.count, self.digest = [epoch, self.count, self.digest], 0, 0

    def state_dict(self) -> dict:
        return {"count": self.count, "digest": self.digest, "finished": self.finished}

    @classmethod
    def from_state(cls, state: dict) -> Tally:
        return cls(state["count"], state["digest"], state["finished"])
