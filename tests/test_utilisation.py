"""FLOP counting and the GAN's amortised step (benchmarks/utilisation.py), against arithmetic."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from hpcgen.benchmarks.utilisation import _amortised, _gan_step_kinds, count_flops


def test_matmul_and_conv_flops_are_twice_the_multiply_adds_forward_and_backward():
    a, b = torch.randn(32, 48, requires_grad=True), torch.randn(48, 64, requires_grad=True)
    assert count_flops(lambda: a @ b) == 2 * 32 * 48 * 64
    # backward: one matmul of the same size for each input's gradient
    assert count_flops(lambda: (a @ b).sum().backward()) == 3 * 2 * 32 * 48 * 64
    x, w = torch.randn(2, 8, 10, 10), torch.randn(16, 8, 3, 3)
    assert count_flops(lambda: F.conv2d(x, w, padding=1)) == 2 * 2 * 16 * 10 * 10 * 8 * 9


def test_it_counts_through_a_double_backward_that_torchs_module_tracking_refuses():
    """R1's torch.autograd.grad(create_graph=True) on a leaf input under a module."""
    net = torch.nn.Linear(16, 1)

    def r1_like():
        x = torch.randn(4, 16, requires_grad=True)
        (grad,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
        grad.square().sum().backward()

    with pytest.raises(RuntimeError, match="leaf node"), FlopCounterMode(display=False):
        r1_like()
    assert count_flops(r1_like) > count_flops(lambda: net(torch.randn(4, 16)))


def test_gan_steps_of_each_kind_and_their_amortised_cost():
    assert _gan_step_kinds(16, 4, r1=True, pl=True) == {"r1_pl": 0, "plain": 1, "pl": 4}
    assert _gan_step_kinds(16, 4, r1=True, pl=False) == {"r1_pl": 0, "plain": 1}
    assert _gan_step_kinds(16, 4, r1=False, pl=True) == {"r1_pl": 0, "plain": 1, "pl": 4}

    class Cfg:
        r1_interval, pl_interval, r1_gamma, pl_weight = 16, 4, 1.0, 2.0

    # 64 steps: 48 plain (10), 12 PL only (14), 4 with both (30)
    kinds = {"plain": {"s": 10.0}, "pl": {"s": 14.0}, "r1_pl": {"s": 30.0}}
    assert _amortised(kinds, Cfg, "s") == pytest.approx((48 * 10 + 12 * 14 + 4 * 30) / 64)
    Cfg.pl_weight = 0.0  # 16 steps: 15 plain, 1 with R1 (step 0 is r1_pl)
    assert _amortised({"plain": {"s": 10.0}, "r1_pl": {"s": 30.0}}, Cfg, "s") == pytest.approx(
        (15 * 10 + 30) / 16
    )


def test_time_shares_group_a_convolution_steps_op_time_and_bound_what_the_rest_can_give():
    from hpcgen.benchmarks.utilisation import op_kind, time_shares

    assert [op_kind(n) for n in ("aten::convolution_backward", "aten::mkldnn_convolution",
            "aten::bmm", "aten::native_group_norm", "aten::_foreach_mul_", "aten::silu")] == [
        "convolution", "convolution", "matmul", "norm", "optimizer", "other"]  # fmt: skip
    x = torch.randn(2, 16, 32, 32, requires_grad=True)
    w = torch.randn(16, 16, 3, 3, requires_grad=True)

    def step():
        F.conv2d(F.silu(x), w, padding=1).square().sum().backward()

    result = time_shares(step)
    shares = result["shares"]
    assert abs(sum(shares.values()) - 1) < 1e-9 and shares["convolution"] > 0
    assert result["bound_by_conv"] == pytest.approx(1 / shares["convolution"])
    assert time_shares(lambda: torch.mm(x.flatten(1), x.flatten(1).T))["bound_by_conv"] is None
