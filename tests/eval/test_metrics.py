"""FID and KID against their definitions and against torch-fidelity on identical features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from hpcgen.eval.metrics import feature_statistics, frechet_distance, kernel_inception_distance


def _features(n: int, d: int = 16, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    mix = np.random.RandomState(123).randn(d, d) / np.sqrt(d)  # one distribution's covariance
    return np.random.RandomState(seed).randn(n, d) @ mix + shift


def test_fid_of_a_set_with_itself_is_zero():
    mu, sigma = feature_statistics(_features(500))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_fid_grows_with_a_growing_distribution_shift():
    ref = feature_statistics(_features(2000, seed=1))
    fids = [
        frechet_distance(*ref, *feature_statistics(_features(2000, shift=s)))
        for s in (0, 0.5, 1, 2)
    ]
    assert fids == sorted(fids) and fids[-1] > 10 * fids[1]
    # a pure mean shift s in every one of d = 16 coordinates adds d s^2 to the FID
    assert fids[-1] - fids[0] == pytest.approx(16 * 4, rel=0.1)


def test_fid_equals_torch_fidelity_on_identical_features():
    a, b = _features(400, seed=2), _features(300, shift=0.3, seed=3)
    ours = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    sa, sb = ({"mu": m, "sigma": s} for m, s in (feature_statistics(a), feature_statistics(b)))
    theirs = fid_statistics_to_metric(sa, sb, verbose=False)["frechet_inception_distance"]
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_kid_equals_torch_fidelity_on_one_full_subset_and_is_near_zero_for_one_distribution():
    a, b = _features(200, seed=4), _features(200, shift=0.5, seed=5)
    ours, _ = kernel_inception_distance(a, b, subsets=1, subset_size=200)
    theirs = kid_features_to_metric(
        torch.from_numpy(a), torch.from_numpy(b), kid_subsets=1, kid_subset_size=200, verbose=False
    )["kernel_inception_distance_mean"]
    assert ours == pytest.approx(theirs, rel=1e-6)
    same, _ = kernel_inception_distance(_features(400, seed=6), _features(400, seed=7), 10, 200)
    assert abs(same) < 0.1 * ours
