"""data.*: where images come from, how shards are written, how the stream reads them."""

from __future__ import annotations

from dataclasses import dataclass

from hpcgen.config.checks import ConfigError, check_choice, check_positive
from hpcgen.data.choices import DATA_SOURCES, EXTENSIONS, FILTERS

# configs/data/synthetic.yaml's directory, resolved when Hydra composes (HPCGEN_DATA_DIR, the
# resolution and the set's size name it); a DataConfig built in Python is given its root
SYNTHETIC_ROOT = (
    "${oc.env:HPCGEN_DATA_DIR,'~/.cache/hpcgen/data'}"
    "/toy_bedroom_${data.resolution}px_${data.num_samples}"
)


@dataclass
class DataConfig:
    """Where images come from, how shards are written, and how the stream reads them."""

    name: str = "synthetic"  # synthetic | lsun_bedroom | folder
    root: str = SYNTHETIC_ROOT  # the shard directory (written on first use for synthetic/folder)
    source: str | None = None  # LSUN lmdb dir, folder of images or zip (prepare reads it)
    resolution: int = 32
    num_samples: int = 2048  # synthetic only: size of the generated set
    samples_per_shard: int = 256
    filter: str = "lanczos"  # resize filter at preparation: lanczos | box | bicubic | bilinear
    format: str = "png"  # shard image encoding: png (lossless) | jpeg | webp
    quality: int = 95  # jpeg / webp quality
    shuffle_buffer: int = 256
    num_workers: int = 1  # DataLoader worker processes per rank (0: read in the main process)
    hflip: bool = True  # random horizontal flips in the stream
    max_images: int | None = None  # train on the first N images of the shards (null: all)

    def __post_init__(self) -> None:
        check_choice("data.name", self.name, DATA_SOURCES)
        if self.max_images is not None and (
            isinstance(self.max_images, bool)
            or not isinstance(self.max_images, int)
            or self.max_images < 1
        ):
            raise ConfigError(
                f"data.max_images={self.max_images!r} is not valid: give a whole number of "
                "images >= 1 (the first N of the shards), or null for all of them"
            )
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ConfigError(
                f"data.resolution={self.resolution} is not valid: use a power of two >= 8 "
                "(e.g. 32, 64, 256)"
            )
        check_positive("data.num_samples", self.num_samples)
        check_positive("data.samples_per_shard", self.samples_per_shard)
        check_choice("data.filter", self.filter, FILTERS)
        check_choice("data.format", self.format, EXTENSIONS)
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"data.quality={self.quality} is not valid: use 1..100")
        check_positive("data.shuffle_buffer", self.shuffle_buffer, allow_zero=True)
        check_positive("data.num_workers", self.num_workers, allow_zero=True)
        if self.name == "folder" and not self.source:
            raise ConfigError("data=folder needs data.source=<folder or zip of images>")
