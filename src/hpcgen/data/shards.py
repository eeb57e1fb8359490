"""Sources to webdataset tar shards: resumable, parallel over tasks, manifest written last.

Layout of `data.root`:
  shard-000000.tar ...        `{key}.img.{png,jpg,webp}` + `{key}.id.txt` per sample
  .shard-000000.json ...      per-shard record (count, bytes, sha256, skipped), after its tar
  manifest.json               written last, once every shard has its record

Shard k always holds source ids [k * n, (k + 1) * n); task t of T writes shards t, t + T, ...
Re-running skips shards that have their record, so a killed job resumes where it stopped.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import webdataset as wds
from PIL import Image

import hpcgen
from hpcgen.config import ConfigError, DataConfig
from hpcgen.data.choices import EXTENSIONS, FILTERS
from hpcgen.data.decode import decode_rgb
from hpcgen.data.sources import open_source

SHARD_MANIFEST = "manifest.json"
FORMAT_VERSION = 2


def data_root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser().resolve()


def preprocess(raw: bytes, resolution: int, resample: str) -> tuple[Image.Image, tuple[int, int]]:
    """Decode to RGB, centre-crop to a square, resize (antialiased filter); also the decoded
    size, which says whether the image was upscaled. Raises on bytes that do not decode."""
    im = decode_rgb(raw)
    size = im.size
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    im = im.crop((left, top, left + side, top + side))
    if side != resolution:
        im = im.resize((resolution, resolution), Image.Resampling[FILTERS[resample]])
    return im, size


def encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG")
    else:
        image.save(buf, format=fmt.upper(), quality=quality)
    return buf.getvalue()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (shards and checkpoint manifests)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json_atomic(path: Path, data: object) -> None:
    """Readers see the old file or the whole new one, never a part (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _record_path(root: Path, shard: int) -> Path:
    return root / f".shard-{shard:06d}.json"


def _shard_done(root: Path, shard: int) -> bool:
    record = _record_path(root, shard)
    if not record.is_file():
        return False
    meta = json.loads(record.read_text())
    tar = root / meta["name"]
    return tar.is_file() and tar.stat().st_size == meta["bytes"]


def write_shard(root: Path, shard: int, source, ids: list[str], cfg: DataConfig) -> dict:
    """Write one shard via a temp name; skip (and list) images that do not decode."""
    name = f"shard-{shard:06d}.tar"
    tmp = root / f".{name}.tmp"
    count, skipped, upscaled = 0, [], []
    with wds.TarWriter(str(tmp), mtime=0.0) as sink:  # mtime 0: byte-identical reruns
        for image_id in ids:
            try:
                image, size = preprocess(source.read(image_id), cfg.resolution, cfg.filter)
            except Exception as err:  # any decoder error: count it, list it, go on
                skipped.append({"id": image_id, "reason": f"{type(err).__name__}: {err}"})
                continue
            if min(size) < cfg.resolution:  # kept, but blurrier than the rest: say so
                upscaled.append({"id": image_id, "size": list(size)})
            key = f"{shard:06d}{count:06d}"
            sink.write(
                {
                    "__key__": key,
                    EXTENSIONS[cfg.format]: encode(image, cfg.format, cfg.quality),
                    "id.txt": image_id,
                }
            )
            count += 1
    os.replace(tmp, root / name)
    record = {
        "name": name,
        "count": count,
        "bytes": (root / name).stat().st_size,
        "sha256": sha256_file(root / name),
        "skipped": skipped,
        "upscaled": upscaled,
    }
    write_json_atomic(_record_path(root, shard), record)
    return record


def prepare(cfg: DataConfig, task_index: int = 0, num_tasks: int = 1, log=print) -> dict | None:
    """Write this task's shards; the task that completes the set writes the manifest."""
    if not 0 <= task_index < num_tasks:
        raise ConfigError(f"task_index={task_index} is not in 0..{num_tasks - 1} (num_tasks)")
    source = open_source(cfg.name, cfg.source, cfg.num_samples, cfg.resolution)
    root = data_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(len(source.ids) / cfg.samples_per_shard)
    mine = range(task_index, n_shards, num_tasks)
    for shard in mine:
        if _shard_done(root, shard):
            continue
        lo = shard * cfg.samples_per_shard
        record = write_shard(root, shard, source, source.ids[lo : lo + cfg.samples_per_shard], cfg)
        log(
            f"[prepare] {record['name']}: {record['count']} images, "
            f"{len(record['skipped'])} skipped, {len(record['upscaled'])} upscaled"
        )
    with _locked(root / ".lock"):
        if (root / SHARD_MANIFEST).is_file():
            return read_manifest(root)
        if not all(_shard_done(root, k) for k in range(n_shards)):
            log(f"[prepare] task {task_index}/{num_tasks} done; other tasks still writing")
            return None
        records = [json.loads(_record_path(root, k).read_text()) for k in range(n_shards)]
        skipped = [s for r in records for s in r.pop("skipped")]
        upscaled = [s for r in records for s in r.pop("upscaled", [])]
        manifest = {
            "format_version": FORMAT_VERSION,
            "total": sum(r["count"] for r in records),
            "shards": records,
            "resolution": cfg.resolution,
            "filter": cfg.filter,
            "format": cfg.format,
            "quality": cfg.quality,
            "source": source.kind,
            "source_path": str(cfg.source) if cfg.source else None,
            "source_count": len(source.ids),
            "source_fingerprint": source.fingerprint(),
            "samples_per_shard": cfg.samples_per_shard,
            "skipped": skipped,
            "upscaled": upscaled,
            "tool_version": f"hpcgen {hpcgen.__version__}",
            "created": time.time(),
        }
        if manifest["total"] == 0:
            raise ConfigError(f"no image of {cfg.source} could be decoded; see {root}/.shard-*")
        write_json_atomic(root / SHARD_MANIFEST, manifest)
        log(
            f"[prepare] {root / SHARD_MANIFEST}: {manifest['total']} images in {n_shards} shards, "
            f"{len(skipped)} skipped, {len(upscaled)} upscaled"
        )
        if upscaled:
            log(
                f"WARNING: {len(upscaled)} image(s) smaller than {cfg.resolution}px were "
                f"upscaled (e.g. {upscaled[0]['id']}, {upscaled[0]['size'][0]}x"
                f"{upscaled[0]['size'][1]}): listed under 'upscaled' in {root / SHARD_MANIFEST}; "
                "remove them from the source or lower data.resolution"
            )
        return manifest


def read_manifest(root: Path) -> dict:
    """The manifest of a complete shard directory; ConfigError when it is missing or broken."""
    path = root / SHARD_MANIFEST
    if not path.is_file():
        raise ConfigError(
            f"data.root={root} holds no {SHARD_MANIFEST}: it is not a complete shard directory. "
            "Write it with python launch/prepare.py data=... data.source=<images> "
            f"data.root={root}"
        )
    try:
        manifest = json.loads(path.read_text())
        for shard in manifest["shards"]:
            file = root / shard["name"]
            if not file.is_file() or file.stat().st_size != shard["bytes"]:
                raise ConfigError(
                    f"shard {file} is missing or has the wrong size (manifest says "
                    f"{shard['bytes']} bytes): restore the file, or delete {root} and prepare "
                    "it again"
                )
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is corrupt ({err}): delete {root} and prepare it again") from err
    return manifest


def shard_paths(root: Path, manifest: dict) -> list[str]:
    return [str(root / shard["name"]) for shard in manifest["shards"]]


def check_max_images(max_images: int, total: int, readers: int, where: str) -> None:
    """data.max_images fits the data (`total` images in `where`) and feeds every reader."""
    if max_images > total:
        raise ConfigError(
            f"data.max_images={max_images} is more than the {total} images of {where}: use "
            f"at most {total}, or null for all of them"
        )
    if max_images < readers:
        raise ConfigError(
            f"data.max_images={max_images} cannot feed {readers} reader(s) (ranks x "
            "data.num_workers): give each reader at least one image, or use fewer workers"
        )


def first_images(
    root: Path, manifest: dict, max_images: int | None, readers: int = 1
) -> tuple[list[str], list[int] | None]:
    """data.max_images: the shards that hold the first N images in shard order, and how many
    leading samples of each to read (None: all of every shard). The same on every rank and
    after every resume, since it depends on the manifest only."""
    if max_images is None:
        return shard_paths(root, manifest), None
    check_max_images(max_images, int(manifest["total"]), readers, f"the shards in {root}")
    paths, limits, left = [], [], max_images
    for shard in manifest["shards"]:
        if left == 0:
            break
        take = min(int(shard["count"]), left)
        if take:
            paths.append(str(root / shard["name"]))
            limits.append(take)
            left -= take
    return paths, limits


def ensure_shards(cfg: DataConfig) -> tuple[Path, dict]:
    """(root, manifest) for training; synthetic, folder and zip sources are prepared on first
    use (one writer under a lock, the others wait), LSUN must have been prepared."""
    root = data_root(cfg)
    if cfg.name == "synthetic":
        set_aside_if_stale(root)
    if cfg.name == "lsun_bedroom" or (root / SHARD_MANIFEST).is_file():
        manifest = read_manifest(root)
    else:
        root.mkdir(parents=True, exist_ok=True)
        with _locked(root / ".first-use.lock"):
            if not (root / SHARD_MANIFEST).is_file():
                prepare(cfg)
        manifest = read_manifest(root)
    check_matches(cfg, root, manifest)
    return root, manifest


def set_aside_if_stale(root: Path) -> None:
    """Synthetic shards written by an hpcgen older than the manifest's `source_count` field
    are regenerable: move them aside (nothing deleted) so they are written again."""
    if not (root / SHARD_MANIFEST).is_file():
        return
    with _locked(root.parent / f".{root.name}.stale.lock"):
        try:
            stale = "source_count" not in json.loads((root / SHARD_MANIFEST).read_text())
        except (OSError, ValueError):
            return  # gone (another process moved it) or corrupt: read_manifest says which
        if stale:
            aside = root.with_name(f"{root.name}.old-{int(time.time())}")
            os.replace(root, aside)
            print(f"[hpcgen] {root} was written by an older hpcgen: moved to {aside}; "
                  "writing the synthetic shards again", file=sys.stderr)  # fmt: skip


def check_matches(cfg: DataConfig, root: Path, manifest: dict) -> None:
    """The shards in root were written for this config (resolution; synthetic: its size)."""
    want = {"resolution": cfg.resolution}
    if cfg.name == "synthetic":
        want |= {"source": "synthetic", "source_count": cfg.num_samples}
    got = {k: manifest.get(k) for k in want}
    if got != want:
        raise ConfigError(
            f"the shards in data.root={root} were written for {got}, but this run asks for "
            f"{want}: choose another data.root or delete {root}"
        )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (ranks, array tasks) on one file system."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
