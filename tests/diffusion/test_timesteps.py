"""Improved DDPM's loss-aware timestep sampler."""

from __future__ import annotations

import pytest
import torch

from hpcgen.diffusion.timesteps import LossAwareSampler


def _fill(sampler: LossAwareSampler, per_t: torch.Tensor, rounds: int = 10) -> None:
    t = torch.arange(sampler.T)
    for _ in range(rounds):
        sampler.update(t, per_t)


def test_uniform_until_every_t_has_its_history():
    sampler = LossAwareSampler(T=5, history=3)
    sampler.update(torch.tensor([0, 1, 2, 3]), torch.ones(4))
    assert not sampler.warm
    assert torch.allclose(sampler.probabilities(), torch.full((5,), 0.2, dtype=torch.float64))


def test_probabilities_follow_the_rms_loss_and_the_weights_keep_the_loss_unbiased():
    sampler = LossAwareSampler(T=4, history=10, uniform_prob=0.0)
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    _fill(sampler, losses)
    p = sampler.probabilities()
    assert torch.allclose(p, (losses / losses.sum()).double())
    t, w = sampler.sample(20_000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.allclose(w, (1 / (4 * p[t])).float())
    # E_p[w L_t] is the uniform average of L_t: exactly, and by sampling
    assert float((p * losses.double() / (4 * p)).sum()) == pytest.approx(float(losses.mean()))
    assert float((w * losses[t]).mean()) == pytest.approx(float(losses.mean()), rel=0.02)


def test_history_keeps_the_last_values_and_survives_a_state_round_trip():
    sampler = LossAwareSampler(T=2, history=3)
    for value in (1.0, 2.0, 3.0, 4.0):
        sampler.update(torch.tensor([0]), torch.tensor([value]))
    assert sampler.history[0].tolist() == [2.0, 3.0, 4.0] and sampler.counts.tolist() == [3, 0]
    restored = LossAwareSampler(T=2, history=3)
    restored.load_state_dict(sampler.state_dict())
    assert torch.equal(restored.history, sampler.history)
    assert torch.equal(restored.counts, sampler.counts)
