"""An endless, exactly resumable stream of image batches from webdataset shards.

Readers: each rank runs W DataLoader workers (W = data.num_workers, or the main process when
0), so R x W readers in all; reader s = rank * W + worker. Each epoch the shards are permuted
by (seed, epoch), identically everywhere, and reader s takes shards s, s + R*W, ... When there
are fewer shards than readers, every reader scans all shards and keeps every (R*W)-th sample
instead: slower, but still disjoint. Samples pass a shuffle buffer seeded by (seed, epoch, s);
flips are a hash of (seed, epoch, key). A reader's position is (epoch, samples consumed), so
restoring it replays the same order without decoding. The stream never ends, so ranks never
disagree on the number of batches.

DataLoader returns batches from workers in turn (0, 1, ..., W-1, 0, ...); on resume the worker
to be read next is mapped onto DataLoader worker 0, so the batch order continues exactly.

Accounting: each reader keeps a per-epoch tally of what it consumed (data/tally.py), checkpointed
with its position, so every sample read once per epoch across hosts can be checked.
"""

from __future__ import annotations

import hashlib
import random
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hpcgen.data.decode import decode_shard_image
from hpcgen.data.shards import shard_paths
from hpcgen.data.tally import Tally
from hpcgen.data.tar import tar_samples


class _Reader:
    """One reader's endless sequence of uint8 batches, with its position after each batch."""

    def __init__(
        self,
        shards: list[str],
        slot: int,
        n_slots: int,
        seed: int,
        buffer: int,
        hflip: bool,
        batch_size: int,
        epoch: int,
        consumed: int,
        limits: dict[str, int] | None = None,
        tally: Tally | None = None,
    ) -> None:
        self.shards, self.slot, self.n_slots, self.limits = shards, slot, n_slots, limits
        self.seed, self.buffer, self.hflip, self.batch_size = seed, buffer, hflip, batch_size
        self.epoch, self.consumed, self.skipped = epoch, consumed, 0
        self.tally = tally or Tally()

    def _raw_samples(self, epoch: int) -> Iterator[dict]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        if len(self.shards) >= self.n_slots:
            mine, keep = [self.shards[i] for i in order[self.slot :: self.n_slots]], None
        else:  # fewer shards than readers: split by sample position instead
            mine, keep = [self.shards[i] for i in order], self.slot

        def count_error(err: Exception) -> bool:
            self.skipped += 1
            warnings.warn(f"skipping unreadable tar data: {err}", stacklevel=2)
            return True

        pipeline = wds.DataPipeline(
            wds.SimpleShardList(mine), lambda src: tar_samples(src, count_error, self.limits)
        )
        rng = random.Random(f"{self.seed}-{epoch}-{self.slot}")
        buffer: list[dict] = []
        for position, sample in enumerate(pipeline):
            if keep is not None and position % self.n_slots != keep:
                continue
            buffer.append(sample)
            if len(buffer) > self.buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def _decode(self, sample: dict, epoch: int) -> torch.Tensor | None:
        key = next((k for k in sample if k.startswith("img.")), None)
        try:
            image = decode_shard_image(sample[key])  # (3, H, W) uint8
        except Exception:  # bad bytes or no image: counted, never fatal
            self.skipped += 1
            return None
        if self.hflip and flipped(self.seed, epoch, sample["__key__"]):
            image = image.flip(2)
        return image

    def batches(self) -> Iterator[tuple[torch.Tensor, dict]]:
        samples = self._raw_samples(self.epoch)
        for _ in range(self.consumed):  # replay to the saved position, no decoding
            next(samples)
        images: list[torch.Tensor] = []
        yielded_in_epoch = self.consumed > 0
        while True:
            try:
                sample = next(samples)
            except StopIteration:
                if not yielded_in_epoch:
                    raise RuntimeError(
                        f"reader {self.slot} of {self.n_slots} got no sample in "
                        f"epoch {self.epoch}: fewer images than readers"
                    ) from None
                self.tally.finish(self.epoch)
                self.epoch, self.consumed, yielded_in_epoch = self.epoch + 1, 0, False
                samples = self._raw_samples(self.epoch)
                continue
            self.consumed, yielded_in_epoch = self.consumed + 1, True
            self.tally.add(sample)
            image = self._decode(sample, self.epoch)
            if image is not None:
                images.append(image)
            if len(images) == self.batch_size:
                batch = torch.stack(images)  # (B, 3, H, W) uint8
                skipped, self.skipped = self.skipped, 0
                meta = {"epoch": self.epoch, "consumed": self.consumed, "skipped": skipped}
                yield batch, {**meta, "tally": self.tally.state_dict()}
                images = []


class _ReaderDataset(IterableDataset):
    def __init__(self, readers: list[_Reader], rotation: int) -> None:
        self.readers, self.rotation = readers, rotation

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict]]:
        info = get_worker_info()
        logical = ((info.id if info else 0) + self.rotation) % len(self.readers)
        for batch, meta in self.readers[logical].batches():
            yield batch, {**meta, "reader": logical}


def _ignore_preemption_signal(_: int) -> None:
    # SLURM signals every process of the step; the training process decides what to do, and
    # a worker killed by SIGTERM would break the DataLoader before the preemption save
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def flipped(seed: int, epoch: int, key: str) -> bool:
    """Whether this sample is mirrored in this epoch: a coin per (seed, epoch, key), the same on
    every rank and resume. A hash, not a CRC: CRC is affine, so between two epochs every key's
    bit would agree, or every key's toggle, and the images' relative flips never changed."""
    return bool(hashlib.blake2b(f"{seed}-{epoch}-{key}".encode(), digest_size=1).digest()[0] & 1)


def to_unit_range(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [0, 255] -> [-1, 1]. Done after the copy to the device: a quarter of the bytes
    cross PCIe, and the CPU cores stay with the loader workers."""
    return images.to(dtype) / 127.5 - 1.0


class ShardStream:
    """Batches of uint8 images, shape (B, 3, H, W), for one rank."""

    def __init__(
        self,
        shards: list[str],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 256,
        num_workers: int = 0,
        hflip: bool = False,
        limits: list[int] | None = None,
    ) -> None:
        """`limits`: how many leading samples of each shard to read (data.max_images's
        shards.first_images), None for whole shards."""
        self.shards, self.batch_size = shards, batch_size
        self.limits = None if limits is None else dict(zip(shards, limits, strict=True))
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.seed, self.shuffle_buffer, self.hflip = seed, shuffle_buffer, hflip
        self.n_readers = max(num_workers, 1)
        if len(shards) < world_size * self.n_readers and rank == 0:
            warnings.warn(
                f"{len(shards)} shard(s) for {world_size} rank(s) x {self.n_readers} reader(s): "
                "every reader scans all shards and keeps every n-th sample; write more, "
                "smaller shards (data.samples_per_shard) to read less",
                stacklevel=2,
            )
        self.positions = [(0, 0)] * self.n_readers  # (epoch, consumed) per reader
        self.tallies = [Tally().state_dict() for _ in range(self.n_readers)]
        self.batches_taken, self.skipped = 0, 0
        self._iter: Iterator | None = None

    def state_dict(self) -> dict:
        return {
            "world_size": self.world_size,
            "num_workers": self.n_readers,
            "positions": list(self.positions),
            "tallies": [dict(t) for t in self.tallies],
            "batches_taken": self.batches_taken,
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state.get("skipped", 0))
        self._iter = None
        positions = [tuple(p) for p in state["positions"]]
        fresh = [Tally().state_dict() for _ in range(self.n_readers)]
        if state["world_size"] == self.world_size and state["num_workers"] == self.n_readers:
            self.positions, self.batches_taken = positions, int(state["batches_taken"])
            # a checkpoint of an older hpcgen has no tallies: they count from here on
            self.tallies = [dict(t) for t in state.get("tallies", fresh)]
            return
        self.tallies = fresh
        epoch = max(e for e, _ in positions) + 1
        warnings.warn(
            f"the data stream was saved with {state['world_size']} rank(s) x "
            f"{state['num_workers']} reader(s), now {self.world_size} x {self.n_readers}: "
            f"continuing from the start of epoch {epoch}",
            stacklevel=2,
        )
        self.positions, self.batches_taken = [(epoch, 0)] * self.n_readers, 0

    def _start(self) -> Iterator:
        readers = [
            _Reader(
                self.shards,
                self.rank * self.n_readers + w,
                self.world_size * self.n_readers,
                self.seed,
                self.shuffle_buffer,
                self.hflip,
                self.batch_size,
                *self.positions[w],
                self.limits,
                Tally.from_state(self.tallies[w]),
            )
            for w in range(self.n_readers)
        ]
        dataset = _ReaderDataset(readers, rotation=self.batches_taken % self.n_readers)
        if self.num_workers == 0:
            return iter(dataset)
        return iter(
            DataLoader(
                dataset,
                batch_size=None,
                num_workers=self.num_workers,
                worker_init_fn=_ignore_preemption_signal,
                prefetch_factor=4,
                # its own generator: iter() would otherwise draw a seed from the global torch
                # RNG, which the training step uses and a resumed run restores before this
                generator=torch.Generator().manual_seed(0),
            )
        )

    def next_batch(self) -> torch.Tensor:
        """The next (B, 3, H, W) uint8 batch: convert with `to_unit_range` on the device."""
        if self._iter is None:
            self._iter = self._start()
        batch, meta = next(self._iter)
        self.positions[meta["reader"]] = (meta["epoch"], meta["consumed"])
        self.tallies[meta["reader"]] = meta["tally"]
        self.batches_taken += 1
        self.skipped += meta["skipped"]
        return batch

    def close(self) -> None:
        self._iter = None  # DataLoader workers exit with their iterator


def real_images(root: Path, manifest: dict, n: int, batch: int = 256) -> torch.Tensor:
    """The first n images of the shards in order (no shuffle, no flip): uint8 (n, 3, R, R)."""
    n = min(n, manifest["total"])
    stream = ShardStream(shard_paths(root, manifest), batch, shuffle_buffer=0, num_workers=0)
    images, have = [], 0
    while have < n:
        images.append(stream.next_batch())
        have += len(images[-1])
    stream.close()
    return torch.cat(images)[:n]
