"""The run directory's names and the metric table: one place each, used everywhere."""

from __future__ import annotations

import pytest

from hpcgen.engine.metric_groups import LOSSES, keys_of, metric_group, tensorboard_tag
from hpcgen.engine.run_dir import (
    checkpoint_path,
    commit_manifest,
    committed_checkpoints,
    result_path,
    step_name,
    step_of,
)


def test_step_names_round_trip_through_every_file_kind(tmp_path):
    assert step_name(300) == "step_00000300"
    for name in ("step_00000300", "step_00000300.json", "step_00000300_interp.png"):
        assert step_of(tmp_path / name) == 300
    with pytest.raises(ValueError, match="is not named step_<N>"):
        step_of("latest")


def test_only_committed_checkpoints_count_and_sort_by_step(tmp_path):
    for step in (100, 20, 3):
        checkpoint_path(tmp_path, step).mkdir()
        if step != 20:
            commit_manifest(checkpoint_path(tmp_path, step)).write_text("{}")
    assert [step_of(c) for c in committed_checkpoints(tmp_path)] == [3, 100]
    assert result_path(tmp_path / "run" / "checkpoints" / "step_00000003") == (
        tmp_path / "run" / "eval" / "step_00000003.json"
    )


@pytest.mark.parametrize(
    "key,group,tag",
    [
        ("loss_d", LOSSES, "loss/loss_d"),
        ("mse", LOSSES, "loss/mse"),
        ("max_memory_gb", "memory", "train/max_memory_gb"),  # not on the losses chart
        ("max_rss_gb", "memory", "train/max_rss_gb"),
        ("loss_scale_unet", "loss_scale", "loss_scale/unet"),  # not a loss
        ("lr_generator", "lr", "lr/generator"),
        ("grad_norm_unet", "grad_norm", "grad_norm/unet"),
        ("ada_p", "d_outputs", "train/ada_p"),
        ("images_per_s", "throughput", "train/images_per_s"),
        ("step", "progress", None),
    ],
)
def test_every_metric_key_has_one_group_and_tag(key, group, tag):
    assert metric_group(key) == group
    assert tensorboard_tag(key) == tag


def test_keys_of_picks_one_group():
    row = {"step": 1, "loss_g": 0.5, "loss_d": 1.0, "max_memory_gb": 3.0, "lr_unet": 1e-4}
    assert keys_of(LOSSES, row) == ["loss_d", "loss_g"]
    assert keys_of("memory", row) == ["max_memory_gb"]
