"""Encoded image bytes to 8-bit RGB, whatever mode PIL opens them in.

Besides `Image.convert("RGB")`, which handles CMYK, palette, RGBA (alpha dropped), grayscale
and the first frame of an animated file: 16-bit grayscale (PNG, TIFF) is scaled to 8 bits,
where convert would clip everything above 255 to white, and the EXIF orientation of camera
JPEGs is applied, so a portrait photo is not stored on its side.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

# 16-bit grayscale as Pillow opens it ("I": 16-bit PNGs in older Pillow releases)
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def decode_rgb(raw: bytes) -> Image.Image:
    """Decode, apply the EXIF orientation, 8-bit RGB. Raises on bytes that do not decode."""
    if not raw:
        raise ValueError("zero-byte image")
    with Image.open(io.BytesIO(raw)) as im:
        im.load()  # decode now (the first frame of an animation): a cut file fails here
        im = ImageOps.exif_transpose(im)
    if im.mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(im).astype(np.float64)  # (H, W) in 0..65535
        im = Image.fromarray(np.round(wide.clip(0, 65535) / 257).astype(np.uint8), "L")
    return im.convert("RGB")
