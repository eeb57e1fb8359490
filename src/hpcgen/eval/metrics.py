"""FID and KID as pure functions of features (float64 throughout)."""

from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((m + m.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


# Heusel et al. 2017, eq. 6: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))
def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Tr((S1 S2)^(1/2)) = Tr((A S2 A)^(1/2)) with A = S1^(1/2): a symmetric PSD problem, so
    no complex square roots and no sqrtm iterations."""
    a = _sqrt_psd(sigma1)
    eigs = np.linalg.eigvalsh(a @ sigma2 @ a)
    tr_covmean = np.sqrt(np.clip(eigs, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


# Binkowski et al. 2018, eq. 4: unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3
def mmd2_polynomial(f1: np.ndarray, f2: np.ndarray) -> float:
    d, m = f1.shape[1], f1.shape[0]
    k11 = (f1 @ f1.T / d + 1) ** 3
    k22 = (f2 @ f2.T / d + 1) ** 3
    k12 = (f1 @ f2.T / d + 1) ** 3
    within = (k11.sum() - np.trace(k11) + k22.sum() - np.trace(k22)) / (m * (m - 1))
    return float(within - 2 * k12.mean())


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean and std of MMD^2 over random subsets (without replacement within a subset)."""
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    size = min(subset_size, len(f1), len(f2))
    rng = np.random.RandomState(seed)
    values = [
        mmd2_polynomial(
            f1[rng.choice(len(f1), size, replace=False)],
            f2[rng.choice(len(f2), size, replace=False)],
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))
