"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"): a differentiable pipeline applied to every image D sees, with one
strength p, and the controller that tunes p from D's overfitting.

Geometric augmentations compose one 3x3 matrix per image, applied with one bilinear
grid_sample (reflection padding); colour augmentations compose one 4x4 matrix in RGB. The paper
filters geometric resampling with a wavelet; bilinear is the plain-PyTorch simplification.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hpcgen.gan.choices import AUGMENTATIONS

# ADA, appendix B ("bgc"): the spread of each augmentation's parameter
SPREAD = dict(
    xint_max=0.125, scale_std=0.2, rotate_max=1.0, aniso_std=0.2, xfrac_std=0.125,
    brightness_std=0.2, contrast_std=0.5, hue_max=1.0, saturation_std=1.0,
)  # fmt: skip

_LUMA = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)  # the grey axis in homogeneous RGB


def _eye(b: int, n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(n, device=device).repeat(b, 1, 1)


def _translate(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(tx.shape[0], 3, tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(sx.shape[0], 3, sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(theta.shape[0], 3, theta.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _colour_translate(b: torch.Tensor) -> torch.Tensor:
    m = _eye(b.shape[0], 4, b.device)
    m[:, :3, 3] = b[:, None]
    return m


def _colour_scale(s: torch.Tensor) -> torch.Tensor:
    m = _eye(s.shape[0], 4, s.device)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def _rotate_about_luma(theta: torch.Tensor) -> torch.Tensor:
    """Rodrigues' rotation of RGB about the grey axis: hue rotation keeping luma."""
    v = _LUMA[:3].to(theta.device)
    k = torch.tensor(
        [[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]], device=theta.device
    )
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    r = torch.eye(3, device=theta.device) * c + s * k + (1 - c) * torch.outer(v, v)
    m = _eye(theta.shape[0], 4, theta.device)
    m[:, :3, :3] = r
    return m


class AugmentPipe(nn.Module):
    """images (B, 3, H, W) in [-1, 1] -> augmented images; every augmentation in `enabled` is
    applied to each image independently with probability p (times its multiplier)."""

    def __init__(
        self, enabled: tuple[str, ...] = AUGMENTATIONS, multipliers: dict | None = None
    ) -> None:
        super().__init__()
        unknown = sorted(set(enabled) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; choose from {AUGMENTATIONS}")
        self.enabled = tuple(enabled)
        self.multipliers = {name: 1.0 for name in AUGMENTATIONS} | dict(multipliers or {})

    def forward(
        self, images: torch.Tensor, p: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if p <= 0 or not self.enabled:
            return images
        draw = _Draws(images.shape[0], images.device, generator, p, self)
        return _colour(_geometric(images, draw), draw)


class _Draws:
    """One batch's random draws, in a fixed order from `generator`: per-image uniforms and
    normals, and the gate that keeps an augmentation on the images that draw it."""

    def __init__(
        self, b: int, dev: torch.device, generator: torch.Generator | None, p: float, pipe
    ) -> None:
        self.b, self.dev, self.generator, self.p = b, dev, generator, p
        self.enabled, self.multipliers = pipe.enabled, pipe.multipliers

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape or (self.b,), generator=self.generator, device=self.dev)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape or (self.b,), generator=self.generator, device=self.dev)

    def prob(self, name: str) -> float:
        return self.p * self.multipliers[name]

    def gate(self, name: str, value: torch.Tensor, identity: float, prob: float | None = None):
        """value where the image draws this augmentation, identity elsewhere."""
        b = self.b
        prob = self.prob(name) if prob is None else prob
        on = name in self.enabled and prob > 0
        keep = self.rand() < prob if on else torch.zeros(b, dtype=torch.bool, device=self.dev)
        keep = keep.reshape(b, *[1] * (value.ndim - 1))
        return torch.where(keep, value, torch.full_like(value, identity))


def _geometric(images: torch.Tensor, d: _Draws) -> torch.Tensor:
    """ADA's geometric augmentations as one affine map, in grid_sample's normalised coordinates
    ([-1, 1] spans the image), applied with reflection padding."""
    b, _, h, w = images.shape
    rand, randn, gate, dev = d.rand, d.randn, d.gate, d.dev
    m = _eye(b, 3, dev)
    m = m @ _scale(1 - 2 * gate("xflip", torch.floor(rand() * 2), 0.0), torch.ones(b, device=dev))
    m = m @ _rotate(gate("rotate90", torch.floor(rand() * 4), 0.0) * (math.pi / 2))
    t = gate("xint", (rand(b, 2) * 2 - 1) * SPREAD["xint_max"], 0.0)
    m = m @ _translate(torch.round(t[:, 0] * w) * 2 / w, torch.round(t[:, 1] * h) * 2 / h)
    s = gate("scale", torch.exp2(randn() * SPREAD["scale_std"]), 1.0)
    m = m @ _scale(s, s)
    p_rot = 1 - math.sqrt(max(0.0, 1 - min(d.prob("rotate"), 1.0)))
    theta = (rand() * 2 - 1) * math.pi * SPREAD["rotate_max"]
    m = m @ _rotate(gate("rotate", theta, 0.0, p_rot))  # before and after aniso
    s = gate("aniso", torch.exp2(randn() * SPREAD["aniso_std"]), 1.0)
    m = m @ _scale(s, 1 / s)
    theta = (rand() * 2 - 1) * math.pi * SPREAD["rotate_max"]
    m = m @ _rotate(gate("rotate", theta, 0.0, p_rot))
    t = gate("xfrac", randn(b, 2), 0.0)
    m = m @ _translate(*(t * SPREAD["xfrac_std"] * 2).unbind(1))
    if torch.equal(m, _eye(b, 3, dev)):
        return images
    grid = F.affine_grid(m[:, :2].to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def _colour(images: torch.Tensor, d: _Draws) -> torch.Tensor:
    """ADA's colour augmentations as one 4x4 matrix on homogeneous RGB (mid-grey is 0 in
    [-1, 1])."""
    b, _, h, w = images.shape
    rand, randn, gate, dev = d.rand, d.randn, d.gate, d.dev
    c = _eye(b, 4, dev)
    c = _colour_translate(gate("brightness", randn() * SPREAD["brightness_std"], 0.0)) @ c
    c = _colour_scale(gate("contrast", torch.exp2(randn() * SPREAD["contrast_std"]), 1.0)) @ c
    v = _LUMA.to(dev)
    flip = gate("lumaflip", torch.floor(rand() * 2), 0.0)[:, None, None]
    c = (_eye(b, 4, dev) - 2 * torch.outer(v, v) * flip) @ c  # Householder reflection
    theta = gate("hue", (rand() * 2 - 1) * math.pi * SPREAD["hue_max"], 0.0)
    c = _rotate_about_luma(theta) @ c
    sat = gate("saturation", torch.exp2(randn() * SPREAD["saturation_std"]), 1.0)
    vv = torch.outer(v, v)
    c = (vv + (_eye(b, 4, dev) - vv) * sat[:, None, None]) @ c
    if torch.equal(c, _eye(b, 4, dev)):
        return images
    flat = images.reshape(b, 3, h * w)
    flat = c[:, :3, :3].to(images.dtype) @ flat + c[:, :3, 3:].to(images.dtype)
    return flat.reshape(b, 3, h, w)


# ADA, sec. 3: r_t = E[sign(D(x_real))]; p moves toward keeping r_t at the target
class AdaController:
    """Tunes p so that p can go from 0 to 1 in `adjust_kimg` thousand images; p is training
    state (checkpointed), and the statistic is averaged over ranks so all ranks agree on p."""

    def __init__(
        self, target: float = 0.6, adjust_kimg: float = 500.0, interval: int = 4, p: float = 0.0
    ) -> None:
        self.target, self.adjust_kimg, self.interval = target, adjust_kimg, interval
        self.p = p
        self.sign_sum = 0.0
        self.count = 0
        self.steps = 0
        self.last_rt: float | None = None

    def accumulate(self, real_logits: torch.Tensor) -> None:
        self.sign_sum += float(torch.sign(real_logits.detach()).sum())
        self.count += real_logits.shape[0]

    def step(
        self,
        global_batch: int,
        mean_over_ranks: Callable[[dict[str, float]], dict[str, float]] = lambda v: v,
    ) -> float:
        """Call once per training step (every rank); adjusts p every `interval` steps."""
        self.steps += 1
        if self.steps % self.interval or self.count == 0:
            return self.p
        rt = mean_over_ranks({"rt": self.sign_sum / self.count})["rt"]
        adjust = math.copysign(1.0, rt - self.target) * global_batch * self.interval
        self.p = min(max(self.p + adjust / (self.adjust_kimg * 1000), 0.0), 1.0)
        self.sign_sum, self.count, self.last_rt = 0.0, 0, rt
        return self.p

    def state_dict(self) -> dict[str, Any]:
        return dict(
            p=self.p,
            sign_sum=self.sign_sum,
            count=self.count,
            steps=self.steps,
            last_rt=self.last_rt,
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p, self.sign_sum, self.count = state["p"], state["sign_sum"], state["count"]
        self.steps, self.last_rt = state["steps"], state["last_rt"]


def augmentation_figure(image: torch.Tensor, path: Path, columns: int = 6, seed: int = 0) -> Path:
    """The report's Figure 7: one image (3, H, W) in [-1, 1] under each augmentation alone at
    p = 1 (one row each, `columns` draws), and a last row with all of them at p = 0.5."""
    from torchvision.utils import save_image

    rows = []
    g = torch.Generator().manual_seed(seed)
    batch = image[None].repeat(columns, 1, 1, 1)
    for name in AUGMENTATIONS:
        rows.append(torch.cat([image[None], AugmentPipe((name,))(batch, 1.0, g)]))
    rows.append(torch.cat([image[None], AugmentPipe()(batch, 0.5, g)]))
    grid = torch.cat(rows).clamp(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((grid + 1) / 2, path, nrow=columns + 1, padding=1)
    return path
