"""A checkpoint of another world size, converted once to DeepSpeed's universal format.

`universal-step_N/` sits beside `step_N/` and is made by DeepSpeed's `ds_to_universal` from the
verified `step_N/`. Its files are pickles loaded with `weights_only=False` inside DeepSpeed,
so it gets the same commit manifest as a checkpoint (sizes, sha256, written last) and is
verified before any of it is loaded; one that does not verify is converted again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hpcgen.engine.distributed import barrier, print0
from hpcgen.engine.manifest import CheckpointError, verify, write_manifest
from hpcgen.engine.run_dir import DEEPSPEED_TAG, step_of, tmp_checkpoint_path, universal_path


def universal_checkpoint(
    ckpt: Path, engines: dict[str, Any], saved_world: int, world_size: int, rank: int
) -> Path:
    """Collective: `ckpt` (verified, saved by `saved_world` ranks) in the universal format
    for `world_size` ranks, converted by rank 0 unless a copy that verifies exists."""
    if any(e.zero_optimization_partition_weights() for e in engines.values()):
        raise CheckpointError(
            f"{ckpt} was saved by {saved_world} ranks but this job has {world_size}, and "
            "hpcgen converts ZeRO-1/2 checkpoints only: resume this ZeRO-3 run with "
            f"{saved_world} ranks (hydra.launcher.nodes x tasks_per_node)"
        )
    out = universal_path(ckpt)
    if rank == 0:
        if out.is_dir():
            try:
                verify(out, hashes=True)
            except CheckpointError as err:  # never unpickled: DeepSpeed loads it unchecked
                print0(f"WARNING: {out} does not verify ({err}); removing it and converting "
                       f"{ckpt.name} again")  # fmt: skip
                shutil.rmtree(out)
        if not out.is_dir():
            _convert(ckpt, out, list(engines), saved_world, world_size)
    barrier()
    return out


def _convert(ckpt: Path, out: Path, keys: list[str], saved_world: int, world_size: int) -> None:
    print0(
        f"WARNING: {ckpt} was saved by {saved_world} ranks, this job has {world_size}: "
        f"converting it to DeepSpeed's universal format in {out}; weights and optimizer "
        "state carry over, the data order restarts at the next epoch and each rank's random "
        "streams are reseeded (not bitwise resumable)"
    )
    tmp = tmp_checkpoint_path(out.parent, out.name)
    shutil.rmtree(tmp, ignore_errors=True)
    for key in keys:
        command = [
            sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal",
            "--input_folder", str(ckpt / key / DEEPSPEED_TAG),
            "--output_folder", str(tmp / key / "universal"),
            "--inject_missing_state", "--num_extract_workers", "1",
            "--num_merge_workers", "1",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise CheckpointError(
                f"converting {ckpt / key} for {world_size} ranks failed "
                f"({done.stderr.strip().splitlines()[-1:]}); the command was: "
                f"{' '.join(command)}; or resume with {saved_world} ranks"
            )
    write_manifest(tmp, step=step_of(ckpt), world_size=saved_world, source=ckpt.name)
    os.replace(tmp, out)
