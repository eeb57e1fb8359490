"""The minimal diffusion maths against closed forms."""

from __future__ import annotations

import torch

from hpcgen.diffusion.gaussian import alpha_bars, ddpm_sample, linear_betas, q_sample, respace


def test_linear_schedule_matches_ho_et_al():
    betas = linear_betas(1000)
    assert betas.dtype == torch.float64
    assert torch.isclose(betas[0], torch.tensor(1e-4, dtype=torch.float64))
    assert torch.isclose(betas[-1], torch.tensor(0.02, dtype=torch.float64))
    assert alpha_bars(betas)[-1] < 1e-4  # x_T is (almost) pure noise


def test_q_sample_has_the_marginal_moments():
    ab = alpha_bars(linear_betas(1000))
    x0 = torch.full((20000, 1, 1, 1), 0.5)
    t = torch.full((20000,), 300)
    xt = q_sample(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)), ab)
    assert abs(xt.mean().item() - 0.5 * ab[300].sqrt().item()) < 0.02
    assert abs(xt.var().item() - (1 - ab[300]).item()) < 0.02


def test_respacing_keeps_alpha_bar_on_the_subsequence():
    betas = linear_betas(1000)
    timesteps, new_betas = respace(betas, 50)
    assert len(timesteps) == 50 and timesteps[0] == 0 and timesteps[-1] == 999
    assert torch.allclose(alpha_bars(new_betas), alpha_bars(betas)[timesteps])
    assert torch.allclose(respace(betas, 1000)[1], betas)


def test_sampler_with_the_true_eps_of_a_point_mass_recovers_it():
    # data distribution = delta at c: eps(x_t, t) = (x_t - sqrt(ab_t) c) / sqrt(1 - ab_t)
    betas = linear_betas(200)
    ab = alpha_bars(betas).float()
    c = 0.3

    def eps(x, t):
        a = ab[t][:, None, None, None]
        return (x - a.sqrt() * c) / (1 - a).sqrt()

    for steps in (200, 20):
        x = ddpm_sample(eps, (4, 3, 2, 2), betas, torch.Generator().manual_seed(0), steps=steps)
        assert torch.allclose(x, torch.full_like(x, c), atol=0.05)
