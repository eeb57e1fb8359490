"""An endless, resumable stream of image batches from webdataset shards, one slice per rank.

Each epoch, shards are permuted with a generator seeded by (seed, epoch) — the same on every
rank — and rank r takes shards r, r + world, ...; samples then pass a shuffle buffer seeded by
(seed, epoch, rank). The stream never ends, so ranks never disagree on the number of batches.
Its state is (epoch, samples consumed in the epoch): restoring it replays the same order.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator

import numpy as np
import torch
import webdataset as wds
from PIL import Image


class ShardStream:
    """Batches of images as float tensors in [-1, 1], shape (B, 3, H, W)."""

    def __init__(
        self,
        shards: list[str],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 256,
    ) -> None:
        if len(shards) < world_size:
            raise ValueError(
                f"{len(shards)} shard(s) cannot feed {world_size} ranks: write more, smaller "
                "shards (data.samples_per_shard) or use fewer ranks"
            )
        self.shards, self.batch_size = shards, batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.epoch, self.consumed = 0, 0
        self._samples: Iterator | None = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
        self._samples = None

    def next_batch(self) -> torch.Tensor:
        images = [self._next_sample() for _ in range(self.batch_size)]
        return torch.stack(images)  # (B, 3, H, W)

    def _next_sample(self) -> torch.Tensor:
        if self._samples is None:
            self._samples = self._epoch_samples(self.epoch)
            for _ in range(self.consumed):  # replay up to the saved position
                next(self._samples)
        try:
            sample = next(self._samples)
        except StopIteration:
            self.epoch, self.consumed = self.epoch + 1, 0
            self._samples = self._epoch_samples(self.epoch)
            sample = next(self._samples)
        self.consumed += 1
        return sample

    def _epoch_samples(self, epoch: int) -> Iterator[torch.Tensor]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        mine = [self.shards[i] for i in order[self.rank :: self.world_size]]
        rng = random.Random(f"{self.seed}-{epoch}-{self.rank}")
        buffer: list[dict] = []
        for sample in wds.DataPipeline(wds.SimpleShardList(mine), wds.tarfile_to_samples()):
            buffer.append(sample)
            if len(buffer) > self.shuffle_buffer:
                yield _decode(buffer.pop(rng.randrange(len(buffer))))
        rng.shuffle(buffer)
        for sample in buffer:
            yield _decode(sample)


def _decode(sample: dict) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(sample["img.png"])) as im:
            array = np.asarray(im.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    except (KeyError, OSError) as err:
        raise ValueError(
            f"sample {sample.get('__key__')} in {sample.get('__url__')} is unreadable ({err}): "
            "rewrite the shards"
        ) from err
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0  # (3, H, W)
