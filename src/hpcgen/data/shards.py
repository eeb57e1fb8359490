"""Webdataset tar shards: writing them (atomically, manifest last) and checking them.

Layout of `data.root`: shard-000000.tar, shard-000001.tar, ... and manifest.json, written last.
Each sample is `{key}.img.png` plus `{key}.id.txt` (the source id).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import webdataset as wds
from PIL import Image

from hpcgen.config import ConfigError, DataConfig
from hpcgen.data.synthetic import toy_bedroom

MANIFEST = "manifest.json"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
FORMAT_VERSION = 1


def data_root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser().resolve()


def read_manifest(root: Path) -> dict:
    """The manifest of a complete shard directory; ConfigError when it is missing or broken."""
    path = root / MANIFEST
    if not path.is_file():
        raise ConfigError(
            f"data.root={root} holds no {MANIFEST}: it is not a complete shard directory. "
            "Point data.root at shards written by hpcgen, or use data=synthetic / data=folder "
            "data.source=<images> to write them on first use"
        )
    try:
        manifest = json.loads(path.read_text())
        shards = manifest["shards"]
        for shard in shards:
            file = root / shard["name"]
            if not file.is_file() or file.stat().st_size != shard["bytes"]:
                raise ConfigError(
                    f"shard {file} is missing or has the wrong size (manifest says "
                    f"{shard['bytes']} bytes): delete {root} to rewrite it, or restore the file"
                )
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is corrupt ({err}): delete {root} to rewrite it") from err
    return manifest


def shard_paths(root: Path, manifest: dict) -> list[str]:
    return [str(root / shard["name"]) for shard in manifest["shards"]]


def write_shards(
    root: Path, samples: Iterable[tuple[str, Image.Image]], samples_per_shard: int, meta: dict
) -> dict:
    """Write (source_id, image) pairs as PNG shards; each shard via a temp name, manifest last."""
    root.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = []
    it = iter(samples)
    index = 0
    while True:
        name = f"shard-{len(shards):06d}.tar"
        tmp = root / f".{name}.tmp"
        count = 0
        with wds.TarWriter(str(tmp)) as sink:
            for source_id, image in _take(it, samples_per_shard):
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                sink.write(
                    {"__key__": f"{index:09d}", "img.png": buf.getvalue(), "id.txt": source_id}
                )
                index += 1
                count += 1
        if count == 0:
            tmp.unlink()
            break
        os.replace(tmp, root / name)
        shards.append(
            {
                "name": name,
                "count": count,
                "bytes": (root / name).stat().st_size,
                "sha256": _sha256(root / name),
            }
        )
    if not shards:
        raise ConfigError(f"no images to write into {root}: the source is empty")
    manifest = {"format_version": FORMAT_VERSION, "total": index, "shards": shards, **meta}
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / MANIFEST)
    return manifest


def ensure_shards(cfg: DataConfig) -> tuple[Path, dict]:
    """Return (root, manifest), writing synthetic or folder shards on first use (under a lock)."""
    root = data_root(cfg)
    if cfg.name == "lsun_bedroom":
        return root, read_manifest(root)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        if (root / MANIFEST).is_file():
            manifest = read_manifest(root)
            _check_matches(cfg, root, manifest)
            return root, manifest
        meta = {"source": cfg.name, "resolution": cfg.resolution, "filter": "box"}
        if cfg.name == "synthetic":
            samples = ((f"toy-{i}", toy_bedroom(i, cfg.resolution)) for i in range(cfg.num_samples))
        else:
            files = list_images(Path(cfg.source).expanduser())
            meta["source_path"] = str(Path(cfg.source).expanduser().resolve())
            samples = ((str(f), _load_square(f, cfg.resolution)) for f in files)
        return root, write_shards(root, samples, cfg.samples_per_shard, meta)


def list_images(source: Path) -> list[Path]:
    if not source.is_dir():
        raise ConfigError(f"data.source={source} does not exist or is not a folder of images")
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(
            f"data.source={source} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files


def _load_square(path: Path, resolution: int) -> Image.Image:
    """Centre crop to a square, then an antialiased box resize to resolution."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side))
        return im.resize((resolution, resolution), Image.Resampling.BOX)


def _check_matches(cfg: DataConfig, root: Path, manifest: dict) -> None:
    want = {"resolution": cfg.resolution, "source": cfg.name}
    if cfg.name == "synthetic":
        want["total"] = cfg.num_samples
    got = {k: manifest.get(k) for k in want}
    if got != want:
        raise ConfigError(
            f"the shards in data.root={root} were written for {got}, but this run asks for "
            f"{want}: choose another data.root or delete {root}"
        )


def _take(it: Iterator, n: int) -> Iterator:
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            return


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (ranks, array tasks) on one file system."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
