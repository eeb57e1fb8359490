"""Preparation: sources (LSUN LMDB, folder, zip, synthetic) to shards, resumable, manifest last."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from hpcgen.config import ConfigError, DataConfig
from hpcgen.data.shards import ensure_shards, prepare, read_manifest
from hpcgen.data.synthetic import toy_bedroom


def image_bytes(fmt: str, size=(48, 40), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def stable(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("created", "source_path")}


def test_toy_bedroom_depends_only_on_index_and_is_not_constant():
    a, b = np.asarray(toy_bedroom(3, 32)), np.asarray(toy_bedroom(3, 32))
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, np.asarray(toy_bedroom(4, 32)))
    assert a.std() > 10  # a picture, not a flat colour


def test_synthetic_shards_have_a_manifest_written_last(tmp_path):
    cfg = DataConfig(
        root=str(tmp_path / "toy"), resolution=16, num_samples=40, samples_per_shard=10
    )
    root, manifest = ensure_shards(cfg)
    assert manifest["total"] == 40 and len(manifest["shards"]) == 4
    assert [s["count"] for s in manifest["shards"]] == [10] * 4
    assert manifest["source"] == "synthetic" and manifest["skipped"] == []
    assert sorted(p.name for p in root.glob("*.tar")) == [f"shard-00000{i}.tar" for i in range(4)]
    assert not list(root.glob(".*.tmp"))
    assert read_manifest(root) == manifest
    assert ensure_shards(cfg)[1] == manifest  # second use reads, does not rewrite
    other = DataConfig(root=str(root), resolution=32, num_samples=40, samples_per_shard=10)
    with pytest.raises(ConfigError, match="were written for"):
        ensure_shards(other)


def test_synthetic_shards_of_an_older_hpcgen_are_set_aside_and_written_again(tmp_path):
    cfg = DataConfig(root=str(tmp_path / "toy"), resolution=8, num_samples=20, samples_per_shard=10)
    root, manifest = ensure_shards(cfg)
    old = {k: v for k, v in manifest.items() if k != "source_count"}
    (root / "manifest.json").write_text(json.dumps(old))  # as written before that field
    root, again = ensure_shards(cfg)
    assert again == read_manifest(root) and again["source"] == "synthetic"
    (aside,) = tmp_path.glob("toy.old-*")  # moved, not deleted
    assert json.loads((aside / "manifest.json").read_text()) == old


def test_truncated_shard_is_reported_with_the_fix(tmp_path):
    cfg = DataConfig(root=str(tmp_path), resolution=8, num_samples=20, samples_per_shard=10)
    ensure_shards(cfg)
    with open(tmp_path / "shard-000001.tar", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ConfigError, match="shard-000001.tar is missing or has the wrong size"):
        read_manifest(tmp_path)


def test_lsun_lmdb_with_webp_jpeg_and_a_corrupt_value(tmp_path):
    import lmdb

    src = tmp_path / "bedroom_train_lmdb"
    env = lmdb.open(str(src), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i in range(5):
            txn.put(f"img{i:03d}".encode(), image_bytes("WEBP" if i % 2 else "JPEG"))
        txn.put(b"img100", b"\x00not an image")
        txn.put(b"img101", image_bytes("JPEG")[:60])  # truncated
        txn.put(b"img102", b"")  # zero bytes
    env.close()
    cfg = DataConfig(
        name="lsun_bedroom",
        source=str(src),
        root=str(tmp_path / "shards"),
        resolution=16,
        samples_per_shard=3,
        format="webp",
        quality=90,
    )
    manifest = prepare(cfg, log=lambda *_: None)
    assert manifest["total"] == 5 and manifest["source_count"] == 8
    assert {s["id"] for s in manifest["skipped"]} == {"img100", "img101", "img102"}
    assert all(s["reason"] for s in manifest["skipped"])
    assert manifest["format"] == "webp" and manifest["filter"] == "lanczos"
    sample = next(
        iter(wds.WebDataset(str(tmp_path / "shards" / "shard-000000.tar"), shardshuffle=False))
    )
    assert sample["id.txt"] == b"img000"
    image = Image.open(io.BytesIO(sample["img.webp"]))
    assert image.size == (16, 16) and image.mode == "RGB"


def test_folder_and_zip_sources_give_the_same_images(tmp_path):
    src = tmp_path / "images" / "nested"
    src.mkdir(parents=True)
    for i in range(3):
        (src / f"{i}.png").write_bytes(image_bytes("PNG", (40 + i, 30), (10 * i, 50, 0)))
    (src / "notes.txt").write_text("not an image")
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as z:
        for i in range(3):
            z.write(src / f"{i}.png", f"nested/{i}.png")
    manifests = []
    for name, source in (("folder", tmp_path / "images"), ("zip", tmp_path / "images.zip")):
        cfg = DataConfig(
            name="folder",
            source=str(source),
            root=str(tmp_path / name),
            resolution=8,
            samples_per_shard=2,
        )
        manifests.append(prepare(cfg, log=lambda *_: None))
    assert [m["source"] for m in manifests] == ["folder", "zip"]
    assert manifests[0]["total"] == manifests[1]["total"] == 3
    assert [s["sha256"] for s in manifests[0]["shards"]] == [
        s["sha256"] for s in manifests[1]["shards"]
    ]


@pytest.mark.parametrize("bad", ["missing", "empty"])
def test_bad_source_paths_are_clear_errors(tmp_path, bad):
    source = tmp_path / "nope" if bad == "missing" else tmp_path
    cfg = DataConfig(name="folder", source=str(source), root=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="does not exist|holds no images"):
        prepare(cfg)


def test_array_tasks_write_disjoint_shards_and_the_last_writes_the_manifest(tmp_path):
    cfg = DataConfig(root=str(tmp_path / "a"), resolution=8, num_samples=50, samples_per_shard=10)
    assert prepare(cfg, task_index=1, num_tasks=2, log=lambda *_: None) is None
    assert sorted(p.name for p in (tmp_path / "a").glob("*.tar")) == [
        "shard-000001.tar",
        "shard-000003.tar",
    ]
    parallel = prepare(cfg, task_index=0, num_tasks=2, log=lambda *_: None)
    serial = prepare(
        DataConfig(root=str(tmp_path / "b"), resolution=8, num_samples=50, samples_per_shard=10),
        log=lambda *_: None,
    )
    assert stable(parallel) == stable(serial)


def test_killed_prepare_resumes_to_an_identical_manifest(tmp_path):
    def cfg(root):
        return DataConfig(root=str(root), resolution=64, num_samples=320, samples_per_shard=40)

    code = (
        "import sys; from hpcgen.config import DataConfig; from hpcgen.data.shards import "
        f"prepare; prepare(DataConfig(root={str(tmp_path / 'killed')!r}, resolution=64, "
        "num_samples=320, samples_per_shard=40))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    first = tmp_path / "killed" / ".shard-000000.json"
    deadline = time.monotonic() + 60
    while not first.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (tmp_path / "killed" / "manifest.json").exists()
    written = {p.name for p in (tmp_path / "killed").glob("shard-*.tar")}
    assert 1 <= len(written) < 8
    log: list[str] = []
    resumed = prepare(cfg(tmp_path / "killed"), log=log.append)
    assert not any("shard-000000.tar:" in line for line in log), "a complete shard was rewritten"
    clean = prepare(cfg(tmp_path / "clean"), log=lambda *_: None)
    assert stable(resumed) == stable(clean)
    assert json.loads((tmp_path / "killed" / "manifest.json").read_text()) == resumed
