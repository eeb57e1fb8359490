"""Data suite: the shard stream against torchvision's ImageFolder and a decode-only bound.

All three read the same images (toy bedrooms as PNG): the stream from webdataset shards,
ImageFolder (PIL, its default loader, float output made in its workers) from one PNG file per
image, and the bound decodes the
same PNG bytes from memory with the stream's decoder (TorchCodec) in one process, with no
I/O, shuffling, flipping or batching. The stream hands uint8 batches to the training process,
which converts them on the device (`to_unit_range`); a second stream row converts on the CPU.
"""

from __future__ import annotations

import tarfile
import time
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from hpcgen.benchmarks.common import summary
from hpcgen.config import DataConfig
from hpcgen.data.decode import decode_shard_image
from hpcgen.data.shards import ensure_shards, shard_paths
from hpcgen.data.stream import ShardStream, to_unit_range


def _images_per_s(
    batches, n_batches: int, batch_size: int, repeats: int, warmup: int = 4
) -> dict[str, Any]:
    """Rates over `repeats` consecutive windows of n_batches, after a warm-up; median, min, max."""
    for _ in range(warmup):  # worker start, first shards opened, prefetch queues filled
        next(batches)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n_batches):
            next(batches)
        rates.append(n_batches * batch_size / (time.perf_counter() - start))
    return summary(rates, "images_per_s")


def _endless(loader):
    while True:
        yield from loader


def _prepare(workdir: Path, images: int, resolution: int, samples_per_shard: int):
    """The shards, and the same PNG bytes as one file per image for ImageFolder."""
    cfg = DataConfig(
        root=str(workdir / "shards"),
        resolution=resolution,
        num_samples=images,
        samples_per_shard=samples_per_shard,
    )
    root, manifest = ensure_shards(cfg)
    pngs = []  # the same PNG bytes, for ImageFolder files and the decode-only bound
    for path in shard_paths(root, manifest):
        with tarfile.open(path) as tar:
            pngs += [tar.extractfile(m).read() for m in tar if m.name.endswith(".img.png")]
    folder = workdir / "imagefolder" / "bedroom"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for i, data in enumerate(pngs):
            (folder / f"{i:07d}.png").write_bytes(data)
    return shard_paths(root, manifest), pngs


def _stream_rates(shards, batch_size: int, num_workers: int, n_batches: int, repeats: int):
    """The stream's uint8 batches, then the same with the float conversion in this process."""
    stream = ShardStream(
        shards,
        batch_size,
        shuffle_buffer=256,
        num_workers=num_workers,
        hflip=True,
    )
    stream_rate = _images_per_s(iter(stream.next_batch, None), n_batches, batch_size, repeats)
    stream.close()
    # the same with the uint8 -> float conversion in this process (where there is no GPU to
    # do it): its two intra-op threads then compete with the workers for the cores
    stream = ShardStream(
        shards,
        batch_size,
        shuffle_buffer=256,
        num_workers=num_workers,
        hflip=True,
    )
    float_rate = _images_per_s(
        (to_unit_range(stream.next_batch()) for _ in iter(int, 1)), n_batches, batch_size, repeats
    )
    stream.close()
    return stream_rate, float_rate


def _imagefolder_rate(
    workdir: Path, batch_size: int, num_workers: int, n_batches: int, repeats: int
):
    tf = transforms.Compose(
        [
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    loader = DataLoader(
        datasets.ImageFolder(str(workdir / "imagefolder"), transform=tf),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        drop_last=True,
        persistent_workers=num_workers > 0,
    )
    return _images_per_s(_endless(loader), n_batches, batch_size, repeats)


def _decode_only_rate(pngs: list[bytes], batch_size: int, n_batches: int, repeats: int):
    def decode_only():  # the stream's decoder, nothing else
        while True:
            for data in pngs:
                yield decode_shard_image(data)

    decoded = decode_only()
    return _images_per_s(
        iter(lambda: [next(decoded) for _ in range(batch_size)], None),
        n_batches,
        batch_size,
        repeats,
    )


def run(
    workdir: Path,
    images: int,
    resolution: int,
    batch_size: int,
    num_workers: int,
    samples_per_shard: int,
    repeats: int = 5,
) -> dict:
    shards, pngs = _prepare(workdir, images, resolution, samples_per_shard)
    n_batches = images // batch_size  # one epoch per measured repeat
    stream_rate, float_rate = _stream_rates(shards, batch_size, num_workers, n_batches, repeats)
    folder_rate = _imagefolder_rate(workdir, batch_size, num_workers, n_batches, repeats)
    bound_rate = _decode_only_rate(pngs, batch_size, n_batches, repeats)
    return {
        "suite": "data",
        "images": images,
        "resolution": resolution,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "repeats": repeats,
        "stream": stream_rate,
        "stream_float_on_cpu": float_rate,
        "imagefolder": folder_rate,
        "decode_only": bound_rate,
        "stream_vs_imagefolder": stream_rate["median"] / folder_rate["median"],
        "stream_vs_decode_only": stream_rate["median"] / bound_rate["median"],
        "stream_float_on_cpu_vs_imagefolder": float_rate["median"] / folder_rate["median"],
        "targets": {"stream_vs_imagefolder": ">= 2.0", "stream_vs_decode_only": ">= 0.7"},
    }
