"""GAN losses and penalties against their definitions."""

from __future__ import annotations

import math

import torch
from torch import nn

from hpcgen.gan.losses import (
    d_logistic_loss,
    g_minimax_loss,
    g_nonsaturating_loss,
    gradient_penalty,
    path_length_penalty,
    r1_penalty,
)


def test_logistic_losses_at_an_undecided_discriminator():
    zero = torch.zeros(4)
    assert math.isclose(float(d_logistic_loss(zero, zero)), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(float(g_nonsaturating_loss(zero)), math.log(2), rel_tol=1e-6)
    assert math.isclose(float(g_minimax_loss(zero)), -math.log(2), rel_tol=1e-6)


def test_nonsaturating_loss_keeps_gradients_where_minimax_saturates():
    # early in training D rejects fakes confidently: logits very negative
    logits = torch.full((4,), -8.0, requires_grad=True)
    (g_ns,) = torch.autograd.grad(g_nonsaturating_loss(logits), logits)
    (g_mm,) = torch.autograd.grad(g_minimax_loss(logits), logits)
    assert g_ns.abs().mean() > 100 * g_mm.abs().mean()


def _critic() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(64, 1))


def test_r1_equals_a_numerically_computed_gradient_norm():
    critic = _critic().double()
    real = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty(critic(real).squeeze(1), real)
    # central differences of D(x_i) for each input coordinate
    h, norms = 1e-6, torch.zeros(2, dtype=torch.float64)
    flat = real.detach().clone().flatten(1)
    for i in range(2):
        for j in range(flat.shape[1]):
            plus, minus = flat[i].clone(), flat[i].clone()
            plus[j] += h
            minus[j] -= h
            with torch.no_grad():
                d = critic(torch.stack([plus, minus]).reshape(2, 3, 4, 4)).squeeze(1)
            norms[i] += ((d[0] - d[1]) / (2 * h)) ** 2
    assert math.isclose(float(r1.detach()), float(norms.mean()), rel_tol=1e-6)
    r1.backward()  # the penalty trains D: its graph reaches the weights (not the last bias)
    assert critic[0].weight.grad.abs().sum() > 0 and critic[3].weight.grad.abs().sum() > 0


def test_wgan_gp_penalty_is_zero_for_a_one_lipschitz_linear_critic():
    a = torch.randn(3, 4, 4)
    a = a / a.norm()  # ||grad|| = ||a|| = 1 everywhere

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (x * a).sum(dim=[1, 2, 3])

    real, fake = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    assert float(gradient_penalty(critic, real, fake)) < 1e-10
    assert float(gradient_penalty(lambda x: 3 * critic(x), real, fake)) > 3.9  # (3 - 1)^2


def test_path_length_penalty_tracks_the_mean_and_differentiates_through_w():
    ws = torch.randn(4, 3, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(8, 3 * 4 * 4, dtype=torch.float64, requires_grad=True)  # G's weights

    def penalty(wt: torch.Tensor, decay: float) -> tuple[torch.Tensor, torch.Tensor]:
        img = (ws.mean(dim=1) @ wt).reshape(4, 3, 4, 4)  # (B, 3, 4, 4), a function of w
        zero = torch.zeros([], dtype=torch.float64)
        return path_length_penalty(img, ws, zero, decay, torch.Generator().manual_seed(0))

    pl, mean = penalty(weight, decay=1.0)
    assert float(mean) > 0 and float(pl) >= 0
    _, mean_slow = penalty(weight, decay=0.01)
    assert math.isclose(float(mean_slow), 0.01 * float(mean), rel_tol=1e-9)
    # the penalty's gradient reaches G's weights through dimg/dw (a double backward): it
    # equals the finite difference of the penalty (decay 0 keeps the running mean fixed)
    (grad,) = torch.autograd.grad(penalty(weight, decay=0.0)[0], weight)
    direction = torch.randn_like(weight)
    eps = 1e-6
    with torch.no_grad():
        plus, minus = weight + eps * direction, weight - eps * direction
    numeric = (penalty(plus, 0.0)[0] - penalty(minus, 0.0)[0]) / (2 * eps)
    assert float(grad.abs().max()) > 0
    assert math.isclose(float((grad * direction).sum()), float(numeric), rel_tol=1e-6)
