"""A checkpoint directory's commit manifest: every file's size and sha256, written last.

Checkpoints (step_N/) and their conversions for another world size (universal-step_N/) carry
the same manifest, and nothing in either is unpickled before its bytes verify against it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from hpcgen.data.shards import sha256_file
from hpcgen.engine.run_dir import COMMIT_MANIFEST, commit_manifest


class CheckpointError(RuntimeError):
    """No checkpoint can be loaded although one was expected; the message says what to do."""


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` durably: a crash leaves the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_manifest(directory: Path, **fields: Any) -> dict:
    """Hash every file under `directory` and write its manifest (with `fields`) atomically:
    the last write of a checkpoint, which makes it count."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        files[str(path.relative_to(directory))] = {
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
    manifest = {**fields, "created": time.time(), "files": files}
    write_atomic(commit_manifest(directory), json.dumps(manifest, indent=1))
    return manifest


def verify(
    ckpt: Path,
    world_size: int | None = None,
    hashes: bool = False,
    share: tuple[int, int] = (0, 1),
) -> dict:
    """The manifest of a committed checkpoint, or CheckpointError saying what is wrong
    (with `world_size`, also when it was saved by another number of ranks).

    Sizes are checked always, sha256 with `hashes`: a checkpoint is a pickle, and pickles run
    code, so nothing is unpickled before its bytes are the ones the run wrote. `share=(r, n)`:
    this is rank r of n, which hash every n-th file each (one read of the checkpoint in all)."""
    manifest_path = commit_manifest(ckpt)
    if not manifest_path.is_file():
        raise CheckpointError(f"{ckpt} has no {COMMIT_MANIFEST} manifest: it was never committed")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"{manifest_path} is corrupt ({err})") from err
    if world_size is not None and manifest.get("world_size") != world_size:
        raise CheckpointError(
            f"{ckpt} was saved by {manifest.get('world_size')} ranks but this job has "
            f"{world_size}: resume with the same number of ranks"
        )
    rank, ranks = share
    for i, (rel, meta) in enumerate(sorted(files.items())):
        path = ckpt / rel
        if not path.is_file() or path.stat().st_size != meta["bytes"]:
            raise CheckpointError(
                f"{path} is missing or its size differs from the manifest: refusing to load it"
            )
        if hashes and i % ranks == rank and sha256_file(path) != meta["sha256"]:
            raise CheckpointError(
                f"{path} does not match its sha256 in the manifest (changed after the save: "
                "bit rot, an edit, or someone else's file): refusing to load it"
            )
    return manifest
