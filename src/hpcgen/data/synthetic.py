"""Procedural "toy bedroom" images: the embedded default dataset.

Image i depends only on (seed, i): wall and floor with a horizon, a window, a bed (frame,
blanket, pillow), sometimes a lamp and a rug. Drawn at 4x the target size, then box-filtered
down, so edges are antialiased at any resolution.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SUPERSAMPLE = 4


def _rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, rgb: np.ndarray) -> None:
    """Fill a rectangle given in fractions of the image size."""
    h, w, _ = img.shape
    img[int(y0 * h) : max(int(y1 * h), int(y0 * h) + 1), int(x0 * w) : max(int(x1 * w), 1)] = rgb


def _ellipse(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, rgb: np.ndarray) -> None:
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((xx / w - cx) / rx) ** 2 + ((yy / h - cy) / ry) ** 2 <= 1.0
    img[mask] = rgb


def _colour(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    return (rng.uniform(lo, hi, size=3) * 255).astype(np.uint8)


def toy_bedroom(index: int, resolution: int, seed: int = 0) -> Image.Image:
    """Render toy bedroom number `index` as an RGB image of resolution x resolution."""
    rng = np.random.default_rng([seed, index])
    size = resolution * SUPERSAMPLE
    img = np.empty((size, size, 3), dtype=np.uint8)  # (H, W, 3)
    horizon = rng.uniform(0.45, 0.7)
    _rect(img, 0, 0, 1, horizon, _colour(rng, 0.45, 0.95))  # wall
    _rect(img, 0, horizon, 1, 1, _colour(rng, 0.2, 0.6))  # floor
    # window on the wall: frame, then glass
    wx, ww = rng.uniform(0.05, 0.6), rng.uniform(0.2, 0.35)
    wy, wh = rng.uniform(0.05, 0.15), rng.uniform(0.15, horizon - 0.2)
    _rect(img, wx, wy, wx + ww, wy + wh, _colour(rng, 0.85, 1.0))
    glass = np.array([rng.uniform(90, 160), rng.uniform(150, 210), 235], dtype=np.uint8)
    _rect(img, wx + 0.02, wy + 0.02, wx + ww - 0.02, wy + wh - 0.02, glass)
    if rng.random() < 0.5:  # rug under the bed
        _ellipse(
            img,
            rng.uniform(0.3, 0.7),
            rng.uniform(horizon + 0.1, 0.95),
            rng.uniform(0.2, 0.4),
            rng.uniform(0.05, 0.1),
            _colour(rng, 0.1, 0.9),
        )
    # bed: frame, blanket, pillow; its top edge sits a little above the horizon
    bx, bw = rng.uniform(0.0, 0.45), rng.uniform(0.4, 0.6)
    by, bh = horizon - rng.uniform(0.05, 0.15), rng.uniform(0.2, 0.35)
    _rect(img, bx, by, bx + bw, min(by + bh, 1), _colour(rng, 0.15, 0.4))
    _rect(img, bx + 0.02, by + 0.05, bx + bw - 0.02, min(by + bh - 0.04, 1), _colour(rng, 0.2, 1.0))
    _rect(img, bx + 0.04, by + 0.01, bx + 0.04 + bw * 0.35, by + 0.07, _colour(rng, 0.85, 1.0))
    if rng.random() < 0.5:  # bedside lamp: stand and shade
        lx = min(bx + bw + rng.uniform(0.03, 0.1), 0.9)
        _rect(img, lx + 0.03, horizon - 0.15, lx + 0.05, horizon + 0.02, _colour(rng, 0.1, 0.3))
        _ellipse(img, lx + 0.04, horizon - 0.17, 0.05, 0.04, _colour(rng, 0.8, 1.0))
    return Image.fromarray(img).resize((resolution, resolution), Image.Resampling.BOX)
