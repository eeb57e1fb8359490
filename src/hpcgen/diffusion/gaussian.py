"""Gaussian diffusion (Ho et al. 2020; Improved DDPM, Nichol & Dhariwal 2021): pure functions.

`Diffusion` holds the float64 coefficients of one schedule; everything else takes it with the
model output and returns tensors. Model output parameterisations: "eps", "x0", "mu"; variances:
"fixed_small" (beta_tilde), "fixed_large" (beta), "learned_range" (an extra output channel per
image channel interpolating log beta and log beta_tilde).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

PARAMETERISATIONS = ("eps", "x0", "mu")
VARIANCES = ("fixed_small", "fixed_large", "learned_range")
LOSSES = ("simple", "hybrid", "vlb")  # training_losses' loss=


# Ho et al. 2020, sec. 4: beta_t linear from 1e-4 to 0.02 at T = 1000 (scaled for other T)
def linear_betas(steps: int) -> torch.Tensor:
    scale = 1000 / steps
    return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)


# Improved DDPM, eq. 17: alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) pi/2), s = 0.008;
# beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), clipped at 0.999
def cosine_betas(steps: int, s: float = 0.008) -> torch.Tensor:
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


def alpha_bars(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class Diffusion:
    """Precomputed float64 coefficients of one (possibly respaced) schedule."""

    betas: torch.Tensor  # (T,)
    timesteps: torch.Tensor  # (T,) the model's timestep for each index (respacing keeps them)

    @classmethod
    def from_schedule(cls, schedule: str, steps: int) -> Diffusion:
        """'linear' or 'cosine' with `steps` timesteps."""
        return cls.from_betas(SCHEDULES[schedule](steps))

    @classmethod
    def from_betas(cls, betas: torch.Tensor, timesteps: torch.Tensor | None = None) -> Diffusion:
        return cls(betas.double(), torch.arange(len(betas)) if timesteps is None else timesteps)

    @property
    def T(self) -> int:  # noqa: N802 - the paper's symbol
        return self.betas.shape[0]

    @property
    def alpha_bar(self) -> torch.Tensor:
        return alpha_bars(self.betas)

    @property
    def alpha_bar_prev(self) -> torch.Tensor:
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])

    @property
    def beta_tilde(self) -> torch.Tensor:
        """Improved DDPM, eq. 10: posterior variance (1 - abar_{t-1}) / (1 - abar_t) beta_t."""
        return self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)

    @property
    def posterior_coefs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Improved DDPM, eq. 11: mu_tilde = c0 x_0 + c1 x_t; returns (c0, c1)."""
        c0 = self.betas * self.alpha_bar_prev.sqrt() / (1 - self.alpha_bar)
        c1 = (1 - self.alpha_bar_prev) * (1 - self.betas).sqrt() / (1 - self.alpha_bar)
        return c0, c1

    @property
    def log_beta_tilde_clipped(self) -> torch.Tensor:
        """log beta_tilde with its t = 0 value (zero) replaced by t = 1's, as ADM does."""
        bt = self.beta_tilde
        return torch.log(torch.cat([bt[1:2], bt[1:]]))


def _at(coef: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """coef[t] broadcast to like's shape, in like's dtype and device."""
    return coef.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def respace(diffusion: Diffusion, steps: int) -> Diffusion:
    """Improved DDPM, sec. 4: keep alpha_bar on an evenly spaced subsequence S of timesteps;
    beta_i = 1 - alpha_bar[S_i] / alpha_bar[S_{i-1}]."""
    if not 1 <= steps <= diffusion.T:
        raise ValueError(f"sampling steps must be in 1..{diffusion.T}, got {steps}")
    keep = torch.linspace(0, diffusion.T - 1, steps).round().long().unique()
    ab = diffusion.alpha_bar[keep]
    prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    return Diffusion(1.0 - ab / prev, diffusion.timesteps[keep])


# Ho et al. 2020, eq. 4: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)
def q_sample(d: Diffusion, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return _at(d.alpha_bar.sqrt(), t, x0) * x0 + _at((1 - d.alpha_bar).sqrt(), t, x0) * noise


# Improved DDPM, eq. 10-11: posterior q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I)
def q_posterior(
    d: Diffusion, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, log variance) of the posterior."""
    c0, c1 = d.posterior_coefs
    mean = _at(c0, t, xt) * x0 + _at(c1, t, xt) * xt
    return mean, _at(d.log_beta_tilde_clipped, t, xt).expand_as(xt)


# Ho et al. 2020, eq. 11-12 and Improved DDPM, eq. 13-15: the model's p(x_{t-1} | x_t)
def p_mean_variance(
    d: Diffusion,
    output: torch.Tensor,
    xt: torch.Tensor,
    t: torch.Tensor,
    parameterisation: str = "eps",
    variance: str = "fixed_small",
    clip_x0: bool = True,
) -> dict[str, torch.Tensor]:
    """mean, log_variance and the predicted x0 from the raw network output (B, C or 2C, H, W)."""
    c = xt.shape[1]
    if variance == "learned_range":
        output, v = output[:, :c], output[:, c:]
        frac = (v + 1) / 2  # Improved DDPM, eq. 15: v in [-1, 1] interpolates the log variances
        log_var = frac * _at(d.betas.log(), t, xt) + (1 - frac) * _at(
            d.log_beta_tilde_clipped, t, xt
        )
    elif variance == "fixed_large":  # beta, with beta_tilde[1] at t = 0 as in ADM
        large = torch.cat([d.beta_tilde[1:2], d.betas[1:]])
        log_var = _at(large.log(), t, xt).expand_as(xt)
    else:
        log_var = _at(d.log_beta_tilde_clipped, t, xt).expand_as(xt)
    if parameterisation == "mu":
        # the mean is the output itself; x0 (for DDIM and the figures) inverts eq. 11,
        # mu = c0 x0 + c1 x_t, and is clipped like the others, as improved-diffusion does
        c0, c1 = d.posterior_coefs
        x0 = (output - _at(c1, t, xt) * xt) / _at(c0, t, xt)
        x0 = x0.clamp(-1, 1) if clip_x0 else x0
        return {"mean": output, "log_variance": log_var, "x0": x0}
    if parameterisation == "eps":  # Ho et al. 2020, eq. 15
        x0 = (xt - _at((1 - d.alpha_bar).sqrt(), t, xt) * output) / _at(d.alpha_bar.sqrt(), t, xt)
    else:
        x0 = output
    if clip_x0:
        x0 = x0.clamp(-1, 1)
    mean, _ = q_posterior(d, x0, xt, t)
    return {"mean": mean, "log_variance": log_var, "x0": x0}


def target(
    d: Diffusion,
    parameterisation: str,
    x0: torch.Tensor,
    xt: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """What L_simple regresses the network output onto."""
    if parameterisation == "eps":
        return noise
    if parameterisation == "x0":
        return x0
    return q_posterior(d, x0, xt, t)[0]


# Gaussian KL(N(m1, e^lv1) || N(m2, e^lv2)) per element, in nats
def normal_kl(m1: torch.Tensor, lv1: torch.Tensor, m2: torch.Tensor, lv2: torch.Tensor):
    return 0.5 * (-1.0 + lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2))


def _exact_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


# Phi(x) ~ (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2: the approximation that
# improved-diffusion's (and ADM's) decoder uses, so every bits/dim they publish
def _tanh_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


# the t = 0 decoder's normal CDF: "tanh" (published numbers) or "exact" (erf)
DECODER_CDFS = {"tanh": _tanh_std_normal_cdf, "exact": _exact_std_normal_cdf}


# Ho et al. 2020, eq. 13: the discretised Gaussian decoder for L_0, 256 bins on [-1, 1]
def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, cdf: str = "tanh"
) -> torch.Tensor:
    """log p(x) per element (nats) of data x in [-1, 1] quantised to 256 levels."""
    std_normal_cdf = DECODER_CDFS[cdf]
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = std_normal_cdf(inv_std * (centred + 1 / 255))
    cdf_minus = std_normal_cdf(inv_std * (centred - 1 / 255))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_minus = (1 - cdf_minus).clamp(min=1e-12).log()
    log_delta = (cdf_plus - cdf_minus).clamp(min=1e-12).log()
    return torch.where(
        x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, log_delta)
    )


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.dim())))


# Improved DDPM, eq. 4-6: the VLB term L_{t-1} at t > 0, -log p(x_0 | x_1) at t = 0, in bits/dim
def vlb_terms(
    d: Diffusion,
    mean: torch.Tensor,
    log_var: torch.Tensor,
    x0: torch.Tensor,
    xt: torch.Tensor,
    t: torch.Tensor,
    decoder_cdf: str = "tanh",
) -> torch.Tensor:
    true_mean, true_log_var = q_posterior(d, x0, xt, t)
    kl = _mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
    log_p = discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var, decoder_cdf)
    nll = -_mean_flat(log_p) / math.log(2)
    return torch.where(t == 0, nll, kl)  # (B,)


# Improved DDPM, eq. 16: L_hybrid = L_simple + lambda L_vlb, with stop-gradient on the mean in
# L_vlb so it trains only the variance; lambda = 0 gives L_simple, "vlb" the VLB alone
def training_losses(
    d: Diffusion,
    model: Callable,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    parameterisation: str = "eps",
    variance: str = "fixed_small",
    loss: str = "simple",
    vlb_weight: float = 0.001,
    decoder_cdf: str = "tanh",
) -> dict[str, torch.Tensor]:
    """Per-example losses (B,): 'loss' plus 'mse' and 'vlb' where they apply."""
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r}: choose one of {', '.join(LOSSES)}")
    xt = q_sample(d, x0, t, noise)
    output = model(xt, d.timesteps.to(t.device)[t])
    c = x0.shape[1]
    terms: dict[str, torch.Tensor] = {}
    if loss in ("simple", "hybrid"):
        terms["mse"] = _mean_flat(
            (output[:, :c] - target(d, parameterisation, x0, xt, t, noise)) ** 2
        )
    if loss in ("hybrid", "vlb"):
        frozen = output if loss == "vlb" else torch.cat([output[:, :c].detach(), output[:, c:]], 1)
        p = p_mean_variance(d, frozen, xt, t, parameterisation, variance, clip_x0=False)
        terms["vlb"] = vlb_terms(d, p["mean"], p["log_variance"], x0, xt, t, decoder_cdf)
        if loss == "hybrid":  # L_vlb's weight is per timestep of T, as in the paper
            terms["vlb"] = terms["vlb"] * d.T
    if loss == "simple":
        terms["loss"] = terms.pop("mse")
    elif loss == "hybrid":
        terms["loss"] = terms["mse"] + vlb_weight * terms["vlb"]
    else:
        terms["loss"] = terms["vlb"]
    return terms


def prior_bpd(d: Diffusion, x0: torch.Tensor) -> torch.Tensor:
    """L_T: KL(q(x_T | x_0) || N(0, I)) in bits/dim, (B,)."""
    t = torch.full((x0.shape[0],), d.T - 1, dtype=torch.long, device=x0.device)
    mean = _at(d.alpha_bar.sqrt(), t, x0) * x0
    log_var = _at((1 - d.alpha_bar).log(), t, x0).expand_as(x0)
    zero = torch.zeros_like(x0)
    return _mean_flat(normal_kl(mean, log_var, zero, zero)) / math.log(2.0)


@torch.no_grad()
def bits_per_dim(
    d: Diffusion,
    model: Callable,
    x0: torch.Tensor,
    generator: torch.Generator,
    parameterisation: str = "eps",
    variance: str = "fixed_small",
    decoder_cdf: str = "tanh",
) -> torch.Tensor:
    """Full-chain negative log-likelihood bound: sum of L_T, L_{t-1} and L_0, (B,) bits/dim."""
    total = prior_bpd(d, x0)
    for i in reversed(range(d.T)):
        t = torch.full((x0.shape[0],), i, dtype=torch.long, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        xt = q_sample(d, x0, t, noise)
        p = p_mean_variance(
            d,
            model(xt, d.timesteps.to(t.device)[t]),
            xt,
            t,
            parameterisation,
            variance,
            clip_x0=True,
        )
        total = total + vlb_terms(d, p["mean"], p["log_variance"], x0, xt, t, decoder_cdf)
    return total


def per_sample_noise(
    generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """One draw per sample from its own generator: sample i is the same at any batch size."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


# Ho et al. 2020, Algorithm 2: ancestral sampling with p(x_{t-1} | x_t)
@torch.no_grad()
def ddpm_sample(
    d: Diffusion,
    model: Callable,
    shape: tuple[int, ...],
    seeds: list[int],
    parameterisation: str = "eps",
    variance: str = "fixed_small",
    device: torch.device | str = "cpu",
    clip: str = "recompute",
) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1], one fixed seed per sample. clip (CLIP_X0): the posterior
    mean takes x0 clipped to [-1, 1] (recompute and clip are the same here) or as predicted."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    x = per_sample_noise(gens, shape, device)
    for i in reversed(range(d.T)):
        t = torch.full((len(seeds),), i, dtype=torch.long, device=device)
        out = model(x, d.timesteps.to(device)[t])
        p = p_mean_variance(d, out, x, t, parameterisation, variance, clip != "none")
        x = p["mean"]
        if i > 0:
            x = x + torch.exp(0.5 * p["log_variance"]) * per_sample_noise(gens, shape, device)
    return x.clamp(-1, 1)


# What the samplers do with the predicted x0 (model.clip_x0). DDIM's update needs x0 and the
# noise direction eps. recompute: x0 clipped to [-1, 1] and eps derived from the clipped x0
# (improved-diffusion, guided-diffusion, GLIDE); clip: x0 clipped, eps the network's own
# (diffusers' DDIMScheduler default, use_clipped_model_output=False); none: neither clipped (the
# DDIM paper). On the quickstart DDPM after 2,500 steps (500 samples, DDIM-50) the three gave
# FID 145.7 / 121.8 / 210.4 (README, "Learning quality"): more than the network's layout moved it.
CLIP_X0 = ("recompute", "clip", "none")


# DDIM (Song et al. 2021), eq. 12 with sigma_t(eta) of eq. 16; eta = 0 is deterministic
@torch.no_grad()
def ddim_sample(
    d: Diffusion,
    model: Callable,
    shape: tuple[int, ...],
    seeds: list[int],
    eta: float = 0.0,
    parameterisation: str = "eps",
    variance: str = "fixed_small",
    device: torch.device | str = "cpu",
    x_T: torch.Tensor | None = None,
    clip: str = "recompute",
) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1]; from x_T when given (interpolation), else from each
    seed's noise. With eta = 0 the map x_T -> x_0 is deterministic. clip: see CLIP_X0."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    x = per_sample_noise(gens, shape, device) if x_T is None else x_T.to(device)
    ab, ab_prev = d.alpha_bar, d.alpha_bar_prev
    for i in reversed(range(d.T)):
        t = torch.full((len(seeds),), i, dtype=torch.long, device=device)
        out = model(x, d.timesteps.to(device)[t])
        raw = p_mean_variance(d, out, x, t, parameterisation, variance, clip_x0=False)["x0"]
        x0 = raw if clip == "none" else raw.clamp(-1, 1)
        a, a_prev = ab[i].item(), ab_prev[i].item()
        # the direction to x_t: from the clipped x0 (recompute) or the network's own (clip)
        eps = (x - math.sqrt(a) * (x0 if clip == "recompute" else raw)) / math.sqrt(1 - a)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps
        if i > 0 and sigma > 0:
            x = x + sigma * per_sample_noise(gens, shape, device)
    return x.clamp(-1, 1)


# Song et al. 2021 (DDIM), sec. 4.3: the eta = 0 update run forwards, x_{t-1} -> x_t, with the
# network evaluated at the point it starts from (the usual first-order inversion)
@torch.no_grad()
def ddim_invert(d: Diffusion, model: Callable, x0: torch.Tensor) -> torch.Tensor:
    """x_T whose deterministic DDIM decoding (eta = 0, same d) returns approximately x0; for
    eps-predicting networks (the first C output channels are eps, as with learned variance)."""
    x = x0
    channels = x0.shape[1]
    for i in range(d.T):
        ab, ab_prev = d.alpha_bar[i].item(), d.alpha_bar_prev[i].item()
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        eps = model(x, d.timesteps.to(x.device)[t])[:, :channels]
        x0_hat = (x - (1 - ab_prev) ** 0.5 * eps) / ab_prev**0.5  # x is at level ab_prev
        x = ab**0.5 * x0_hat + (1 - ab) ** 0.5 * eps
    return x


def parse_sampler(spec: str) -> tuple[str, int | None]:
    """'ddpm' (all steps), 'ddpm100', 'ddim50' -> (kind, steps)."""
    for kind in ("ddim", "ddpm"):
        if spec.startswith(kind):
            rest = spec[len(kind) :]
            if rest == "" or rest.isdigit():
                return kind, int(rest) if rest else None
    raise ValueError(f"sampler {spec!r}: use ddpm, ddpmN or ddimN (e.g. ddim50)")
