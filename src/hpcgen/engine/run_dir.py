"""The run directory's layout: every path and file name below <run>/, in one place.

<run>/
  .hydra/config.yaml                 the resolved config (Hydra writes it)
  run.json, metrics.jsonl            run_record.py reads and writes them
  samples/step_N.png                 training sample grids
  checkpoints/
    .tmp-step_N/                     being written: never loaded
    step_N/<engine>/state/...        DeepSpeed's files of each engine
    step_N/hpcgen_rank00000.pt       per-rank hpcgen state (step, data position, RNGs, task)
    step_N/COMMITTED                 the commit manifest: files, sizes, sha256 (written last)
    latest                           the name of the newest committed checkpoint
    universal-step_N/                step_N converted for another number of ranks (with its
                                     own COMMITTED manifest, verified before it is loaded)
  eval/step_N.json                   one evaluation result (with _samples.png, _interp.png)
  eval/manifest.json                 the checkpoints an evaluation array works through
  eval/submitted/step_N.json         an evaluation submitted while training: a one-entry
                                     manifest, its SLURM job ids and times (engine/eval_queue.py)
  eval/submitted/step_N-<job>.out    that job's log

N is the step in 8 digits. Nothing here imports torch: status and report read runs cheaply.
"""

from __future__ import annotations

import re
from pathlib import Path

CHECKPOINTS = "checkpoints"
COMMIT_MANIFEST = "COMMITTED"  # not data/shards.py's SHARD_MANIFEST (manifest.json)
LATEST = "latest"
DEEPSPEED_TAG = "state"  # the tag every engine's save_checkpoint writes under
_STEP = re.compile(r"step_(\d+)")


def step_name(step: int) -> str:
    """`step_00000300`: the name of a checkpoint, sample grid or eval result of that step."""
    return f"step_{step:08d}"


def step_of(path: Path | str) -> int:
    """The step in a name made by step_name (`step_00000300`, `.../step_00000300_interp.png`)."""
    match = _STEP.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named step_<N>")
    return int(match.group(1))


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS


def checkpoint_path(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / step_name(step)


def tmp_checkpoint_path(ckpt_dir: Path, name: str) -> Path:
    return ckpt_dir / f".tmp-{name}"


def universal_path(ckpt: Path) -> Path:
    """Where a checkpoint converted by ds_to_universal for another world size is kept."""
    return ckpt.parent / f"universal-{ckpt.name}"


def universal_paths(ckpt_dir: Path) -> list[Path]:
    return sorted(ckpt_dir.glob("universal-step_*"))


def source_of_universal(universal: Path) -> Path:
    return universal.parent / universal.name.removeprefix("universal-")


def commit_manifest(ckpt: Path) -> Path:
    return ckpt / COMMIT_MANIFEST


def is_committed(ckpt: Path) -> bool:
    return commit_manifest(ckpt).is_file()


def committed_checkpoints(ckpt_dir: Path) -> list[Path]:
    """step_N directories of `ckpt_dir` (a run's checkpoints/) with a commit manifest, by step."""
    if not ckpt_dir.is_dir():
        return []
    return sorted((p for p in ckpt_dir.glob("step_*") if is_committed(p)), key=step_of)


def any_checkpoint(ckpt_dir: Path) -> bool:
    """Whether anything of a checkpoint is there, committed or not."""
    return (ckpt_dir / LATEST).is_file() or any(ckpt_dir.glob("step_*"))


def latest_name(ckpt_dir: Path) -> str | None:
    """What `latest` names (it may be a checkpoint that no longer verifies), or None."""
    path = ckpt_dir / LATEST
    return path.read_text().strip() if path.is_file() else None


def latest_file(ckpt_dir: Path) -> Path:
    return ckpt_dir / LATEST


def latest_step(run_dir: Path) -> int | None:
    name = latest_name(checkpoint_dir(run_dir))
    return step_of(name) if name else None


def rank_state_file(rank: int) -> str:
    """hpcgen's per-rank state inside a checkpoint (weights_only loadable)."""
    return f"hpcgen_rank{rank:05d}.pt"


def model_states_file(engine: str) -> str:
    """DeepSpeed's full module of one engine (ZeRO-1/2), relative to the checkpoint."""
    return f"{engine}/{DEEPSPEED_TAG}/mp_rank_00_model_states.pt"


def sample_grid_path(run_dir: Path, step: int) -> Path:
    return run_dir / "samples" / f"{step_name(step)}.png"


def sample_grids(run_dir: Path) -> list[Path]:
    """Training sample grids, oldest first."""
    return sorted((run_dir / "samples").glob("step_*.png"), key=step_of)


def eval_dir(run_dir: Path) -> Path:
    return run_dir / "eval"


def eval_manifest_path(target: Path) -> Path:
    """The evaluation manifest under a run or sweep directory."""
    return eval_dir(target) / "manifest.json"


def result_path(ckpt: Path) -> Path:
    """eval/step_N.json of a checkpoint checkpoints/step_N."""
    return eval_dir(ckpt.parent.parent) / f"{ckpt.name}.json"


def eval_figure_path(run_dir: Path, ckpt_name: str, kind: str) -> Path:
    """eval/step_N_<kind>.png: kind is samples, interp or noise_prediction."""
    return eval_dir(run_dir) / f"{ckpt_name}_{kind}.png"


def eval_figures(run_dir: Path, kind: str) -> list[Path]:
    return sorted(eval_dir(run_dir).glob(f"step_*_{kind}.png"), key=step_of)


def result_paths(run_dir: Path) -> list[Path]:
    """eval/step_N.json files, by step."""
    return sorted(eval_dir(run_dir).glob("step_*.json"), key=step_of)


def eval_entry(ckpt: Path) -> dict:
    """One manifest entry: the checkpoint checkpoints/step_N, its run and its result's path."""
    return {
        "run_dir": str(ckpt.parent.parent),
        "ckpt": str(ckpt),
        "step": step_of(ckpt),
        "result": str(result_path(ckpt)),
    }


def submission_path(ckpt: Path) -> Path:
    """eval/submitted/step_N.json: the evaluation of checkpoints/step_N submitted in training."""
    return eval_dir(ckpt.parent.parent) / "submitted" / f"{ckpt.name}.json"


def submission_paths(run_dir: Path) -> list[Path]:
    """eval/submitted/step_N.json files, by step."""
    return sorted((eval_dir(run_dir) / "submitted").glob("step_*.json"), key=step_of)


def evaluation_pending(ckpt: Path) -> bool:
    """Submitted during training and without a result yet: retention keeps the checkpoint."""
    return submission_path(ckpt).is_file() and not result_path(ckpt).is_file()
