"""Which chart a metrics.jsonl key belongs to: one table for the report, TensorBoard and status.

A key is matched exactly first, then by prefix; anything else is a loss (the tasks' train_step
returns losses and, for the GAN, D's outputs and ADA's p).
"""

from __future__ import annotations

LOSSES = "losses"

# group -> (exact keys, key prefixes, TensorBoard section)
METRIC_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "progress": (("step", "time"), (), ""),  # the x axes: never drawn as a series
    "images_seen": (("kimg",), (), "train"),
    "throughput": (("images_per_s",), (), "train"),
    "memory": (("max_memory_gb", "max_rss_gb"), (), "train"),
    "data": (("skipped_samples",), (), "train"),
    "d_outputs": (("d_real", "d_fake", "ada_p"), (), "train"),
    "lr": ((), ("lr_",), "lr"),
    "grad_norm": ((), ("grad_norm_",), "grad_norm"),
    "loss_scale": ((), ("loss_scale_",), "loss_scale"),
    LOSSES: ((), (), "loss"),
}


def metric_group(key: str) -> str:
    """The group of one metrics.jsonl key (LOSSES when no row of the table claims it)."""
    for group, (keys, _, _) in METRIC_GROUPS.items():
        if key in keys:
            return group
    for group, (_, prefixes, _) in METRIC_GROUPS.items():
        if key.startswith(prefixes) and prefixes:
            return group
    return LOSSES


def keys_of(group: str, keys: object) -> list[str]:
    """The keys among `keys` that belong to `group`, sorted."""
    return sorted(k for k in keys if metric_group(k) == group)  # type: ignore[attr-defined]


def tensorboard_tag(key: str) -> str | None:
    """`loss_d` -> `loss/loss_d`, `lr_unet` -> `lr/unet`, `ada_p` -> `train/ada_p`; None for
    the progress keys (TensorBoard's own x axis)."""
    group = metric_group(key)
    _, prefixes, section = METRIC_GROUPS[group]
    if not section:
        return None
    for prefix in prefixes:
        if key.startswith(prefix):
            return f"{section}/{key[len(prefix) :]}"
    return f"{section}/{key}"
