"""Checkpoints: collective save into a temp dir, a manifest committed last, atomic `latest`.

The directory's layout (step_N/, hpcgen_rank00000.pt, COMMITTED, latest, universal-step_N/)
is run_dir.py's; this module writes and reads it.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpcgen.engine.disk import free_bytes, human, is_no_space
from hpcgen.engine.distributed import barrier, mean_over_ranks, print0
from hpcgen.engine.manifest import CheckpointError, verify, write_atomic, write_manifest
from hpcgen.engine.run_dir import (
    DEEPSPEED_TAG,
    any_checkpoint,
    checkpoint_path,
    commit_manifest,
    committed_checkpoints,
    evaluation_pending,
    is_committed,
    latest_file,
    latest_name,
    rank_state_file,
    source_of_universal,
    step_of,
    tmp_checkpoint_path,
    universal_paths,
)
from hpcgen.engine.universal import universal_checkpoint


class NoSpaceError(CheckpointError):
    """A save ran out of disk space or quota; the message names sizes and how to resume."""


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values only, so the file loads with weights_only=True."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def saved_zero_stage(ckpt_dir: Path, legacy: int) -> int | None:
    """The ZeRO stage of the newest committed checkpoint in `ckpt_dir` (None: there is none);
    `legacy` for one written before manifests named it (those ran deepspeed.zero_stage)."""
    for ckpt in reversed(committed_checkpoints(ckpt_dir)):
        try:
            manifest = json.loads(commit_manifest(ckpt).read_text())
        except (OSError, ValueError):
            continue  # find_latest says what is wrong with it and falls back
        stage = manifest.get("zero_stage", legacy)
        return stage if isinstance(stage, int) else legacy
    return None


FROM_RANK0 = "from_rank0"  # {part: [keys]} of a rank's state that only rank 0's file holds


def _load_state_file(path: Path) -> dict[str, Any]:
    try:  # tensors and plain values only: a pickle that runs code is refused here
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} needs arbitrary unpickling, which hpcgen's writer never produces: "
            f"refusing to load it ({str(err).splitlines()[0]})"
        ) from err


def load_rank_state(ckpt: Path, rank: int) -> dict[str, Any]:
    """A rank's hpcgen state from a (verified) checkpoint, with what only rank 0's file keeps
    for every rank (FROM_RANK0: the EMA) filled in from there."""
    state = _load_state_file(ckpt / rank_state_file(rank))
    shared = state.pop(FROM_RANK0, {})
    rank0 = _load_state_file(ckpt / rank_state_file(0)) if shared else {}
    for part, keys in shared.items():
        state[part].update({k: rank0[part][k] for k in keys})
    return state


class CheckpointManager:
    """Save, commit, find and load checkpoints of one run directory."""

    def __init__(
        self,
        run_dir: Path,
        rank: int,
        world_size: int,
        keep_last: int,
        milestone_every: int = 0,
        estimated_bytes: int = 0,
        zero_stage: int | None = None,
    ) -> None:
        self.dir = run_dir / "checkpoints"
        self.rank, self.world_size, self.keep_last = rank, world_size, keep_last
        self.milestone_every, self.estimated_bytes = milestone_every, estimated_bytes
        self.zero_stage = zero_stage  # the engines' stage, in each manifest: a resume keeps it
        self._verified: Path | None = None  # hashed by find_latest: load() need not again

    def expected_bytes(self) -> tuple[int, str]:
        """(bytes the next save writes, how that is known): the newest checkpoint's size."""
        for ckpt in reversed(self.committed()):
            try:
                files = json.loads(commit_manifest(ckpt).read_text())["files"]
                return sum(f["bytes"] for f in files.values()), f"the size of {ckpt.name}"
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return self.estimated_bytes, "estimated from the parameter count"

    def warn_if_low_space(self) -> tuple[int, str]:
        """(free bytes, where); rank 0 warns when less is free (space or quota) than two
        checkpoints need."""
        need, how = self.expected_bytes()
        free, what = free_bytes(self.dir)
        if self.rank == 0 and free < 2 * need:
            print0(
                f"WARNING: {human(free)} {what}, less than the {human(2 * need)} that two "
                f"checkpoints need ({how}): saving into {self.dir} may fail. Free space, raise "
                "the quota, lower trainer.keep_last_ckpts or point hydra.run.dir elsewhere"
            )
        return free, what

    def _last_committed(self) -> Path | None:
        """What a resume would start from: the checkpoint `latest` names, else the newest."""
        name = latest_name(self.dir)
        if name and is_committed(self.dir / name):
            return self.dir / name
        committed = self.committed()
        return committed[-1] if committed else None

    def _no_space(
        self, name: str, tmp: Path, err: BaseException, free: tuple[int, str]
    ) -> NoSpaceError | None:
        """After a failed save: the partial directory removed; for want of space (ENOSPC,
        EDQUOT, or torch's errno-less write error on a full disk), the error to raise.
        `free`: what was free when the save began."""
        need, how = self.expected_bytes()
        full = is_no_space(err) or (
            isinstance(err, RuntimeError) and free_bytes(self.dir)[0] < need
        )
        shutil.rmtree(tmp, ignore_errors=True)
        if not full:
            return None
        why = (str(err).strip().splitlines() or [""])[-1]
        return NoSpaceError(
            f"no space to save checkpoint {name} in {self.dir}: it needs about "
            f"{human(need, how)}, {human(free[0])} {free[1]} when it began; the partial "
            f"{tmp.name} is removed and {self.resume_note()}. The writer said: "
            f"{type(err).__name__}: {why}"
        )

    def resume_note(self) -> str:
        """What survives a run that failed for want of space, and how to go on."""
        last = self._last_committed()
        intact = (
            f"the last committed checkpoint {last.name} is intact and a resume starts there"
            if last is not None
            else "no checkpoint was committed yet, so a resume starts from step 0"
        )
        return (
            f"{intact}. Free space or raise the quota, then run the same command again to "
            "resume (python launch/status.py <run or sweep> prints it)"
        )

    def committed(self) -> list[Path]:
        """Committed checkpoints, oldest first (by step)."""
        return committed_checkpoints(self.dir)

    def save(self, step: int, engines: dict[str, Any], state: dict[str, Any]) -> Path:
        """Collective: every rank calls it. Returns the committed directory."""
        final = checkpoint_path(self.dir, step)
        name = final.name
        tmp = tmp_checkpoint_path(self.dir, name)
        free = self.warn_if_low_space()
        try:
            self._write(tmp, engines, state)
            if self.rank == 0:
                self._commit(tmp, final, step)
        except Exception as err:
            no_space = self._no_space(name, tmp, err, free)
            if no_space is None:
                raise
            raise no_space from None  # one line: the chain is torch's and the OS's echoes
        barrier()
        return final

    def _write(self, tmp: Path, engines: dict[str, Any], state: dict[str, Any]) -> None:
        """Every rank writes its part of the checkpoint into `tmp` (not yet committed)."""
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # a save that died half-way
            tmp.mkdir(parents=True)
        barrier()
        for key, engine in engines.items():
            engine.save_checkpoint(str(tmp / key), tag=DEEPSPEED_TAG, save_latest=False)
        torch.save({**state, "rng": rng_state()}, tmp / rank_state_file(self.rank))
        barrier()

    def _commit(self, tmp: Path, final: Path, step: int) -> None:
        """Rank 0: the manifest (written last), the rename, `latest`, then retention."""
        stage = {} if self.zero_stage is None else {"zero_stage": self.zero_stage}
        write_manifest(tmp, step=step, world_size=self.world_size, **stage)
        if final.exists():  # a committed one of the same step: keep the new one
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_atomic(latest_file(self.dir), final.name + "\n")
        self.prune(keep_name=final.name)

    def prune(self, keep_name: str) -> None:
        """Keep the last K, every milestone, the one `latest` names and every one whose
        evaluation is pending (submitted while training, no result yet); delete the rest."""
        for old in self.committed()[: -self.keep_last]:
            step = step_of(old)
            milestone = self.milestone_every and step % self.milestone_every == 0
            if not milestone and old.name != keep_name and not evaluation_pending(old):
                shutil.rmtree(old)
        for converted in universal_paths(self.dir):  # its source is gone
            if not source_of_universal(converted).is_dir():
                shutil.rmtree(converted)

    def find_latest(self, allow_fresh_start: bool = False) -> Path | None:
        """The newest checkpoint that verifies, falling back loudly past broken ones.

        When checkpoints exist but none verifies: an error, or with `allow_fresh_start` the
        directory is moved aside (nothing is deleted) and the run starts from step 0."""
        candidates = self.committed()
        named_latest = latest_name(self.dir)
        if named_latest:
            named = self.dir / named_latest
            if named in candidates:  # prefer what `latest` names, then older ones
                candidates = candidates[: candidates.index(named) + 1]
        for ckpt in reversed(candidates):
            if self._verified_by_all(ckpt) is None:
                return ckpt
        if any_checkpoint(self.dir):
            if not allow_fresh_start:
                raise CheckpointError(
                    f"{self.dir} has checkpoints but none verifies: inspect them, or set "
                    "trainer.allow_fresh_start_on_corrupt=true to move them aside and start "
                    "this run from scratch"
                )
            barrier()  # every rank has looked before rank 0 moves the directory
            if self.rank == 0:
                aside = self.dir.with_name(f"checkpoints.unverified-{int(time.time())}")
                os.replace(self.dir, aside)
                print0(
                    f"WARNING: no checkpoint in {self.dir} verifies; moved it to {aside} "
                    "and starting from scratch (trainer.allow_fresh_start_on_corrupt=true)"
                )
            barrier()
        return None

    def _verified_by_all(self, ckpt: Path) -> str | None:
        """Collective: None when the sizes and sha256 of every file match on every rank (each
        hashes its share), else what is wrong, as this rank saw it (and printed it)."""
        try:
            verify(ckpt, hashes=True, share=(self.rank, self.world_size))  # any world size
            why = None
        except CheckpointError as err:
            why = str(err)
            print(f"WARNING: skipping checkpoint {ckpt}: {why}; trying an older one", flush=True)
        if mean_over_ranks({"ok": float(why is None)})["ok"] < 1.0:
            return why or f"{ckpt} does not verify on another rank (its log names the file)"
        self._verified = ckpt
        return None

    def load(self, ckpt: Path, engines: dict[str, Any]) -> dict[str, Any]:
        """Collective: restore every engine and return this rank's hpcgen state.

        A checkpoint of another world size (ZeRO-1/2) goes through DeepSpeed's universal
        format; every rank then gets rank 0's hpcgen state without its RNGs, and the state
        says `world_size_changed_from` so the caller reseeds and restarts the data stream."""
        why = None if self._verified == ckpt else self._verified_by_all(ckpt)
        if why is not None:
            raise CheckpointError(why)
        manifest = json.loads(commit_manifest(ckpt).read_text())  # verified by find
        saved_world = manifest["world_size"]
        changed = saved_world != self.world_size
        # stage 0 keeps whole copies (rank 0's file): it loads at any world size as it is
        convert = changed and manifest.get("zero_stage") != 0
        if convert:
            universal = universal_checkpoint(ckpt, engines, saved_world, self.world_size, self.rank)
        for key, engine in engines.items():
            if convert:  # read at load time only (DeepSpeed's checkpoint.load_universal)
                engine._config.load_universal_checkpoint = True
                try:
                    path, _ = engine.load_checkpoint(str(universal / key), tag="universal")
                finally:
                    engine._config.load_universal_checkpoint = False
            else:
                path, _ = engine.load_checkpoint(str(ckpt / key), tag=DEEPSPEED_TAG)
            if path is None:
                raise CheckpointError(f"DeepSpeed could not load {ckpt / key}")
        state = load_rank_state(ckpt, 0 if changed else self.rank)
        rng = state.pop("rng")
        if changed:
            state["world_size_changed_from"] = saved_world
        else:
            set_rng_state(rng)
        return state
