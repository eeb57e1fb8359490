"""The diffusion maths against closed forms (Ho et al. 2020; Improved DDPM)."""

from __future__ import annotations

import math

import pytest
import torch

from hpcgen.diffusion.gaussian import (
    CLIP_X0,
    DECODER_CDFS,
    Diffusion,
    alpha_bars,
    cosine_betas,
    ddim_sample,
    ddpm_sample,
    discretized_gaussian_log_likelihood,
    linear_betas,
    normal_kl,
    p_mean_variance,
    parse_sampler,
    prior_bpd,
    q_posterior,
    q_sample,
    respace,
    training_losses,
)

D = Diffusion.from_betas(linear_betas(1000))


def test_linear_schedule_matches_ho_et_al():
    betas = linear_betas(1000)
    assert betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert alpha_bars(betas)[-1] < 1e-4  # x_T is (almost) pure noise


def test_cosine_schedule_follows_eq_17():
    betas = cosine_betas(1000)
    assert betas.max().item() == pytest.approx(0.999)  # clipped near t = T
    ab = alpha_bars(betas)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert ab[499].item() == pytest.approx(f(500) / f(0), rel=1e-9)
    # the cosine schedule destroys information more slowly than the linear one mid-chain
    assert ab[500] > alpha_bars(linear_betas(1000))[500]


def test_q_sample_has_the_marginal_moments():
    x0 = torch.full((20000, 1, 1, 1), 0.5, dtype=torch.float64)
    t = torch.full((20000,), 300)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=x0.dtype)
    xt = q_sample(D, x0, t, noise)
    assert xt.mean().item() == pytest.approx(0.5 * D.alpha_bar[300].sqrt().item(), abs=0.02)
    assert xt.var().item() == pytest.approx((1 - D.alpha_bar[300]).item(), abs=0.02)


def test_posterior_is_bayes_rule_of_the_forward_process():
    # q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0): product of two Gaussians in x_{t-1}
    t, x0, xt = (
        400,
        torch.tensor([[0.3]], dtype=torch.float64),
        torch.tensor([[-0.2]], dtype=torch.float64),
    )
    a_t, ab_prev = 1 - D.betas[t], D.alpha_bar_prev[t]
    precision = a_t / D.betas[t] + 1 / (1 - ab_prev)
    mean = (a_t.sqrt() * xt / D.betas[t] + ab_prev.sqrt() * x0 / (1 - ab_prev)) / precision
    got_mean, got_log_var = q_posterior(D, x0, xt, torch.tensor([t]))
    assert got_mean.item() == pytest.approx(mean.item(), rel=1e-10)
    assert got_log_var.exp().item() == pytest.approx((1 / precision).item(), rel=1e-10)


@pytest.mark.parametrize("parameterisation", ["eps", "x0", "mu"])
def test_every_parameterisation_recovers_the_posterior_from_its_true_target(parameterisation):
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 2, 2, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 999])
    xt = q_sample(D, x0, t, noise)
    true_mean, _ = q_posterior(D, x0, xt, t)
    output = {"eps": noise, "x0": x0, "mu": true_mean}[parameterisation]
    p = p_mean_variance(D, output, xt, t, parameterisation, clip_x0=False)
    assert torch.allclose(p["mean"], true_mean, atol=1e-8)
    assert torch.allclose(p["x0"], x0, atol=1e-6)


def test_learned_range_interpolates_between_the_two_fixed_variances():
    xt, t = torch.zeros(3, 3, 2, 2, dtype=torch.float64), torch.tensor([5, 5, 5])
    v = torch.tensor([-1.0, 1.0, 0.0], dtype=torch.float64).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    p = p_mean_variance(D, torch.cat([xt, v], 1), xt, t, variance="learned_range")
    lv = p["log_variance"][:, 0, 0, 0]
    assert lv[0].item() == pytest.approx(D.beta_tilde[5].log().item())  # v = -1: beta_tilde
    assert lv[1].item() == pytest.approx(D.betas[5].log().item())  # v = +1: beta
    assert lv[2].item() == pytest.approx((lv[0] + lv[1]).item() / 2)


def test_mu_parameterisation_clips_its_x0_but_keeps_its_mean():
    # improved-diffusion clips pred_xstart in the mu branch too (DDIM reads it); the mean stays
    # the network's output
    xt, t = torch.full((2, 3, 2, 2), 0.9, dtype=torch.float64), torch.tensor([700, 700])
    mu = torch.full_like(xt, 3.0)  # far outside: its x0 is well beyond [-1, 1]
    clipped = p_mean_variance(D, mu, xt, t, "mu", clip_x0=True)
    raw = p_mean_variance(D, mu, xt, t, "mu", clip_x0=False)
    assert raw["x0"].min() > 1.5 and torch.equal(clipped["x0"], raw["x0"].clamp(-1, 1))
    assert torch.equal(clipped["mean"], mu) and torch.equal(raw["mean"], mu)


@pytest.mark.parametrize("cdf", ["tanh", "exact"])
def test_kl_and_discretised_likelihood_are_normalised(cdf):
    m, lv = torch.tensor([0.3]), torch.tensor([-1.0])
    assert normal_kl(m, lv, m, lv).item() == pytest.approx(0.0, abs=1e-7)
    # the 256 bins of [-1, 1] partition the real line: their probabilities sum to one
    x = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in ((0.1, -2.0), (-0.7, -4.0), (0.99, -1.0)):
        p = discretized_gaussian_log_likelihood(
            x, torch.full_like(x, mean), torch.full_like(x, log_scale), cdf
        ).exp()
        assert p.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_tanh_decoder_cdf_is_improved_diffusions_approximation_not_erf():
    # Phi(1) = 0.841345 (erf); the tanh form gives 0.841192 (sqrt(2/pi) (1 + 0.044715))
    one = torch.tensor([1.0], dtype=torch.float64)
    exact, approx = DECODER_CDFS["exact"](one).item(), DECODER_CDFS["tanh"](one).item()
    assert exact == pytest.approx(0.8413447, abs=1e-7)
    assert approx == pytest.approx(0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * 1.044715)))
    assert abs(exact - approx) > 1e-4
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    assert (DECODER_CDFS["tanh"](x) - DECODER_CDFS["exact"](x)).abs().max() < 2e-3
    # the default decoder (training's L_0 and bits/dim) is the published one
    x0 = torch.linspace(-1, 1, 8, dtype=torch.float64)
    mean, log_scale = torch.zeros_like(x0), torch.full_like(x0, -3.0)
    default = discretized_gaussian_log_likelihood(x0, mean, log_scale)
    assert torch.equal(default, discretized_gaussian_log_likelihood(x0, mean, log_scale, "tanh"))
    assert not torch.equal(
        default, discretized_gaussian_log_likelihood(x0, mean, log_scale, "exact")
    )


def test_prior_term_is_almost_zero_for_data_in_range():
    x0 = torch.rand(8, 3, 4, 4, dtype=torch.float64) * 2 - 1
    assert prior_bpd(D, x0).max().item() < 1e-4


@pytest.mark.parametrize(
    "loss,keys",
    [("simple", {"loss"}), ("hybrid", {"loss", "mse", "vlb"}), ("vlb", {"loss", "vlb"})],
)
def test_losses_are_per_example_and_hybrid_trains_only_the_variance_through_vlb(loss, keys):
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(4, 3, 4, 4, generator=g) * 2 - 1
    noise, t = torch.randn(x0.shape, generator=g), torch.tensor([0, 1, 300, 999])
    out = torch.zeros(4, 6, 4, 4, requires_grad=True)
    terms = training_losses(D, lambda x, t: out, x0, t, noise, variance="learned_range", loss=loss)
    assert set(terms) == keys and all(v.shape == (4,) for v in terms.values())
    if loss == "hybrid":  # stop-gradient: L_vlb reaches only the variance channels
        (mean_grad,) = torch.autograd.grad(terms["vlb"].sum(), out, retain_graph=True)
        assert mean_grad[:, :3].abs().sum() == 0 and mean_grad[:, 3:].abs().sum() > 0


def point_mass_eps(d: Diffusion, c: float):
    """The exact eps of data distribution delta(c): (x_t - sqrt(abar) c) / sqrt(1 - abar)."""
    full = Diffusion.from_betas(linear_betas(200))

    def eps(x, t):
        ab = full.alpha_bar.float()[t].view(-1, 1, 1, 1)
        return (x - ab.sqrt() * c) / (1 - ab).sqrt()

    return eps


@pytest.mark.parametrize("sampler", ["ddpm", "ddpm20", "ddim20", "ddim5"])
def test_samplers_with_the_exact_denoiser_of_a_point_mass_recover_it(sampler):
    kind, steps = parse_sampler(sampler)
    d = respace(Diffusion.from_betas(linear_betas(200)), steps or 200)
    run = ddim_sample if kind == "ddim" else ddpm_sample
    x = run(d, point_mass_eps(d, 0.3), (3, 2, 2), seeds=[0, 1, 2, 3])
    assert torch.allclose(x, torch.full_like(x, 0.3), atol=0.05)


def test_sample_i_is_the_same_at_any_batch_size_and_ddim_eta0_is_deterministic():
    d = respace(Diffusion.from_betas(linear_betas(200)), 10)

    def model(x, t):  # any smooth denoiser
        return 0.5 * x + 0.001 * t.view(-1, 1, 1, 1)

    four = ddpm_sample(d, model, (3, 4, 4), seeds=[10, 11, 12, 13])
    two = ddpm_sample(d, model, (3, 4, 4), seeds=[12, 13])
    assert torch.equal(four[2:], two)
    a = ddim_sample(d, model, (3, 4, 4), seeds=[5], eta=0.0)
    assert torch.equal(a, ddim_sample(d, model, (3, 4, 4), seeds=[5], eta=0.0))
    assert not torch.equal(ddim_sample(d, model, (3, 4, 4), seeds=[5], eta=1.0), a)


def test_respacing_keeps_alpha_bar_on_the_subsequence():
    d = respace(D, 50)
    assert d.T == 50 and d.timesteps[0] == 0 and d.timesteps[-1] == 999
    assert torch.allclose(d.alpha_bar, D.alpha_bar[d.timesteps])
    assert torch.allclose(respace(D, 1000).betas, D.betas)
    with pytest.raises(ValueError, match="1..1000"):
        respace(D, 0)


def test_ddim_with_eta_zero_inverts_for_a_known_model():
    # data x0 ~ N(0, s^2 I): the exact predictor E[eps | x_t] = sqrt(1-ab) x_t / (ab s^2 + 1-ab)
    from hpcgen.diffusion.gaussian import Diffusion, ddim_invert, ddim_sample, respace

    s = 0.5
    d = respace(Diffusion.from_schedule("cosine", 1000), 200)

    def model(x, t):
        ab = d.alpha_bar.to(x.device)[torch.searchsorted(d.timesteps.to(x.device), t)].float()
        ab = ab[:, None, None, None]
        return (1 - ab).sqrt() * x / (ab * s**2 + 1 - ab)

    x0 = s * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x_T = ddim_invert(d, model, x0)
    assert 0.8 < float(x_T.std()) < 1.2  # a standard-normal-looking latent
    back = ddim_sample(d, model, (3, 8, 8), [0, 1, 2, 3], eta=0.0, x_T=x_T)
    assert torch.allclose(back, x0.clamp(-1, 1), atol=2e-2), float((back - x0).abs().max())
    again = ddim_sample(d, model, (3, 8, 8), [0, 1, 2, 3], eta=0.0, x_T=x_T)
    assert torch.equal(back, again)  # deterministic


def test_report_figures_are_written_and_a_perfect_predictor_has_zero_noise_error(tmp_path):
    from PIL import Image

    from hpcgen.diffusion.figures import noising_strip, predicted_noise_figure
    from hpcgen.diffusion.gaussian import Diffusion

    d = Diffusion.from_schedule("linear", 1000)
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    strip = noising_strip(d, x0, tmp_path / "noising.png", columns=6)
    assert Image.open(strip).size == (6 * 9 + 1, 2 * 9 + 1)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    perfect = predicted_noise_figure(d, lambda x, t: noise, x0, tmp_path / "noise.png", (10, 500))
    assert all(v < 1e-8 for v in perfect.values())
    blind = predicted_noise_figure(d, lambda x, t: torch.zeros_like(x), x0, tmp_path / "zero.png")
    assert all(0.5 < v < 1.5 for v in blind.values())  # predicting 0 misses E[eps^2] = 1
    assert Image.open(tmp_path / "noise.png").size == (2 * 3 * 9 + 1, 2 * 9 + 1)


def clipping_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A stand-in eps network whose x0 leaves [-1, 1], so the clip rules differ."""
    return 0.6 * x + 0.5 * torch.sin(t.float() / 90.0).view(-1, 1, 1, 1)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_clip_modes_are_diffusers_ddim_steps(eta):
    """model.clip_x0 against diffusers' DDIMScheduler on the same 50 timesteps and network:
    recompute is use_clipped_model_output=True, clip its default, none clip_sample=False."""
    diffusers = pytest.importorskip("diffusers")
    steps = 50
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    ref.set_timesteps(steps)
    keep = ref.timesteps.flip(0)  # 0, 20, ..., 980
    ab = D.alpha_bar[keep]
    d = Diffusion(1.0 - ab / torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]]), keep)

    x_T = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    seeds = [1, 2, 3, 4]
    ours = {
        c: ddim_sample(d, clipping_eps, (3, 4, 4), seeds, eta, x_T=x_T, clip=c) for c in CLIP_X0
    }
    for clip in CLIP_X0:
        sched = diffusers.DDIMScheduler(
            num_train_timesteps=1000, beta_schedule="linear", clip_sample=clip != "none"
        )
        sched.set_timesteps(steps)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        x = x_T.clone()
        for i, t in enumerate(sched.timesteps):
            tt = torch.full((4,), int(t))
            noise = None
            if eta > 0 and i < steps - 1:  # our per-sample noise, drawn in the same order
                noise = torch.stack([torch.randn((3, 4, 4), generator=g) for g in gens])
            x = sched.step(
                clipping_eps(x, tt),
                t,
                x,
                eta,
                use_clipped_model_output=clip == "recompute",
                variance_noise=noise,
            ).prev_sample
        torch.testing.assert_close(ours[clip], x.clamp(-1, 1), atol=2e-5, rtol=1e-4)
    # and the three differ: the choice is not a no-op on this network
    assert (ours["recompute"] - ours["clip"]).abs().max() > 0.05
    assert (ours["clip"] - ours["none"]).abs().max() > 0.05


def test_ddpm_sample_clips_x0_unless_clip_is_none():
    d = respace(D, 20)
    a, b, c = (ddpm_sample(d, clipping_eps, (3, 4, 4), [0, 1], clip=k) for k in CLIP_X0)
    torch.testing.assert_close(a, b)  # the posterior mean uses x0 only: recompute == clip
    assert (a - c).abs().max() > 0.05
