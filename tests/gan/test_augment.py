"""ADA: every augmentation is differentiable, off at p = 0, on at p = 1; the controller."""

from __future__ import annotations

import pytest
import torch

from hpcgen.gan.augment import AUGMENTATIONS, AdaController, AugmentPipe, augmentation_figure


def _images(n: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 16, 16, generator=g) * 2 - 1


def test_the_whole_pipeline_at_p_zero_is_the_identity():
    x = _images()
    assert torch.equal(AugmentPipe()(x, 0.0, torch.Generator().manual_seed(1)), x)


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_is_identity_at_p0_changes_at_p1_and_passes_gradients(name):
    x = _images().requires_grad_(True)
    pipe = AugmentPipe((name,))
    assert torch.equal(pipe(x, 0.0, torch.Generator().manual_seed(1)), x)
    y = pipe(x, 1.0, torch.Generator().manual_seed(1))
    assert not torch.allclose(y, x, atol=1e-4), f"{name} at p=1 left every image unchanged"
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_xflip_mirrors_exactly_or_leaves_the_image():
    x = _images(16)
    y = AugmentPipe(("xflip",))(x, 1.0, torch.Generator().manual_seed(3))
    flipped = [torch.allclose(y[i], x[i].flip(-1), atol=1e-5) for i in range(16)]
    kept = [torch.allclose(y[i], x[i], atol=1e-5) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)


def test_ada_controller_raises_p_when_d_overfits_and_lowers_it_otherwise():
    ada = AdaController(target=0.6, adjust_kimg=1.0, interval=2)
    for _ in range(4):  # D calls every real "real": r_t = 1 > 0.6
        ada.accumulate(torch.ones(8))
        ada.step(global_batch=100)
    high = ada.p
    assert high == pytest.approx(0.4)  # 2 adjustments of 100 * 2 / 1000
    for _ in range(2):  # D is fooled on reals half the time: r_t = 0 < 0.6
        ada.accumulate(torch.tensor([1.0, -1.0] * 4))
        ada.step(global_batch=100)
    assert ada.p == pytest.approx(high - 0.2) and ada.last_rt == 0.0
    for _ in range(20):
        ada.accumulate(-torch.ones(8))
        ada.step(global_batch=100)
    assert ada.p == 0.0  # clamped
    restored = AdaController()
    restored.load_state_dict(ada.state_dict())
    assert restored.state_dict() == ada.state_dict()


def test_augmentation_figure_writes_one_row_per_augmentation(tmp_path):
    from PIL import Image

    path = augmentation_figure(_images(1)[0], tmp_path / "augment.png", columns=4)
    width, height = Image.open(path).size
    assert width == 5 * 17 + 1 and height == (len(AUGMENTATIONS) + 1) * 17 + 1
