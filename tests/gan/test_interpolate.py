"""Latent interpolation: endpoints, norms, grids."""

from __future__ import annotations

import pytest
import torch

from hpcgen.gan.interpolate import interpolation_grid, lerp, seeded_latents, slerp
from hpcgen.models.stylegan import build_gan


def test_lerp_and_slerp_hit_both_ends():
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    t = torch.linspace(0, 1, 5)
    for path in (lerp(a, b, t), slerp(a, b, t)):
        assert path.shape == (3, 5, 16)
        assert torch.allclose(path[:, 0], a, atol=1e-5) and torch.allclose(
            path[:, -1], b, atol=1e-5
        )


def test_slerp_keeps_the_norm_where_lerp_shrinks_it():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    mid = torch.tensor([0.5])
    assert slerp(a, b, mid).norm() == pytest.approx(1.0)
    assert lerp(a, b, mid).norm() == pytest.approx(2**-0.5)


def test_seeded_latents_depend_on_the_seed_only():
    assert torch.equal(seeded_latents([5, 6], 8)[1], seeded_latents([6], 8)[0])


@pytest.mark.parametrize("space,method", [("z", "lerp"), ("z", "slerp"), ("w", "lerp")])
def test_interpolation_grid_runs_from_one_image_to_the_other(space, method):
    generator, _ = build_gan("tiny", 16)
    generator.eval()
    z0, z1 = seeded_latents([0, 1], generator.z_dim), seeded_latents([2, 3], generator.z_dim)
    grid = interpolation_grid(generator, z0, z1, steps=5, space=space, method=method)
    assert grid.shape == (10, 3, 16, 16)
    with torch.no_grad():
        ends = generator(torch.cat([z0, z1]), noise_mode="const")
    assert torch.allclose(grid[0], ends[0], atol=1e-4) and torch.allclose(
        grid[4], ends[2], atol=1e-4
    )
    assert not torch.allclose(grid[2], grid[0], atol=1e-3)
