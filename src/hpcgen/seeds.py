"""Every seed formula of hpcgen, named. A run's `seed` is the only input; each stream of
randomness derives its own seed here, so two streams never share one by accident.

The multipliers are primes larger than any count they separate (ranks, images, steps), so
distinct (seed, rank, i) never map to the same integer in practice. noise_generator seeds each
rank's training noise with noise_seed's formula.
"""

from __future__ import annotations

import torch


def image_seeds(seed: int, n: int) -> list[int]:
    """The seed of sample image i (sample grids, evaluation): image i is the same whatever n."""
    return [seed * 1_000_003 + i for i in range(n)]


def network_seed(seed: int) -> int:
    """The global torch seed under which every rank builds the same networks and buffers."""
    return seed * 1000


def rank_seed(seed: int, rank: int) -> int:
    """Python's, numpy's and torch's global RNGs on one rank (augmentations, dropout)."""
    return network_seed(seed) + rank


def noise_seed(seed: int, rank: int) -> int:
    """One rank's training noise generator (DDPM's t and noise, the GAN's z)."""
    return seed * 100_003 + rank


def noise_generator(device: torch.device, seed: int, rank: int) -> torch.Generator:
    """One rank's training noise (noise_seed) on the engine's device; checkpointed."""
    return torch.Generator(device=device).manual_seed(noise_seed(seed, rank))


def rank_seed_after_resize(seed: int, rank: int, step: int) -> int:
    """rank_seed for a resume on another number of ranks: every rank then holds rank 0's saved
    RNGs, so each is reseeded, apart from what a fresh start at step 0 would draw."""
    return rank_seed(seed, rank) * 1_000_003 + step


def noise_seed_after_resize(seed: int, rank: int, step: int) -> int:
    """noise_seed for a resume on another number of ranks (see rank_seed_after_resize)."""
    return noise_seed(seed, rank) + 7_919 * step
