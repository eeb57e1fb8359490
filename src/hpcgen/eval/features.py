"""Feature extractors for FID/KID: the staged Inception through torch-fidelity, and a small
fixed random network for tests, whose numbers are NOT comparable to published FIDs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hpcgen.data.stream import to_unit_range
from hpcgen.eval.inception import staged_weights

INCEPTION = "hpcgen-inception-v3-2015-12-05"
TINY_TEST = "tiny-test-NOT-comparable-to-published-FID"
EXTRACTORS = ("inception", "tiny-test")


@dataclass
class Extractor:
    name: str
    weights_sha256: str
    comparable: bool  # with published FIDs
    features: Callable[[torch.Tensor], torch.Tensor]  # uint8 (B, 3, H, W) -> (B, D)
    device: torch.device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch: int = 64) -> np.ndarray:
        """uint8 (N, 3, H, W) -> float64 (N, D)."""
        if images.dtype != torch.uint8:
            raise TypeError(f"features need uint8 images, got {images.dtype}")
        parts = [
            self.features(images[i : i + batch].to(self.device)).double().cpu()
            for i in range(0, len(images), batch)
        ]
        return torch.cat(parts).numpy()


def _register_inception() -> None:
    import torch_fidelity
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if INCEPTION not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(
            INCEPTION, torch_fidelity.FeatureExtractorInceptionV3
        )


def inception(weights: Path, device: torch.device) -> Extractor:
    """torch-fidelity's InceptionV3 (TF1-compatible resize to 299, its normalisation) with the
    staged 2015-12-05 weights, registered under our own name."""
    from torch_fidelity.utils import create_feature_extractor

    path, record = staged_weights(weights)
    _register_inception()
    net = create_feature_extractor(
        INCEPTION,
        ["2048"],
        cuda=device.type == "cuda",
        feature_extractor_weights_path=str(path),
        verbose=False,
    )
    return Extractor(INCEPTION, record["converted_sha256"], True, lambda x: net(x)[0], device)


class _RandomFeatures(nn.Module):
    """Two fixed random conv layers, mean- and std-pooled: 128 numbers that move with colour,
    layout and texture; seeded, so every process computes the same features."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(20261128)
        self.w1 = nn.Parameter(torch.randn(32, 3, 3, 3, generator=g) / 27**0.5, requires_grad=False)
        self.w2 = nn.Parameter(
            torch.randn(64, 32, 3, 3, generator=g) / 288**0.5, requires_grad=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_unit_range(x)
        x = torch.relu(nn.functional.conv2d(x, self.w1, stride=2, padding=1))
        x = torch.relu(nn.functional.conv2d(x, self.w2, stride=2, padding=1))
        return torch.cat([x.mean(dim=[2, 3]), x.std(dim=[2, 3])], dim=1)  # (B, 128)


def tiny_test(device: torch.device) -> Extractor:
    net = _RandomFeatures().to(device)
    return Extractor(TINY_TEST, "seed-20261128", False, net, device)


def build_extractor(name: str, weights: Path, device: torch.device) -> Extractor:
    if name == "inception":
        return inception(weights, device)
    if name == "tiny-test":
        return tiny_test(device)
    raise ValueError(f"eval.extractor={name!r}: choose one of {', '.join(EXTRACTORS)}")
