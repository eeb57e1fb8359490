"""Valid but unusual images through data=folder: 16-bit, EXIF-rotated, small, and other modes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from hpcgen.config import DataConfig
from hpcgen.data.decode import decode_rgb
from hpcgen.data.shards import prepare


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def sixteen_bit_png(value: int, size=(32, 32)) -> bytes:
    image = Image.fromarray(np.full(size[::-1], value, np.uint16))
    assert image.mode == "I;16"
    return encoded(image, "PNG")


def exif_rotated_jpeg() -> bytes:
    """Stored landscape 48x32 (red left half, blue right), EXIF says: rotate 90 degrees
    clockwise to view (orientation 6), as a phone held upright writes it."""
    pixels = np.zeros((32, 48, 3), np.uint8)
    pixels[:, :24] = (220, 0, 0)
    pixels[:, 24:] = (0, 0, 220)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), c) for c in ((0, 200, 0), (200, 0, 0))]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


def palette_png_with_transparency() -> bytes:
    image = Image.new("RGB", (32, 32), (0, 0, 200)).convert("P", palette=Image.Palette.ADAPTIVE)
    return encoded(image, "PNG", transparency=0)


UNUSUAL = {  # name -> (bytes, the RGB that every pixel should come out as, roughly)
    "grey16_mid.png": (sixteen_bit_png(32768), (128, 128, 128)),
    "grey16_dark.png": (sixteen_bit_png(4096), (16, 16, 16)),
    "cmyk.jpg": (encoded(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"), (255, 0, 0)),
    "palette.png": (palette_png_with_transparency(), (0, 0, 200)),
    "rgba.png": (encoded(Image.new("RGBA", (32, 32), (0, 200, 0, 128)), "PNG"), (0, 200, 0)),
    "grey8.png": (encoded(Image.new("L", (32, 32), 77), "PNG"), (77, 77, 77)),
    "grey_alpha.png": (encoded(Image.new("LA", (32, 32), (77, 255)), "PNG"), (77, 77, 77)),
    "animated.gif": (animated_gif(), (0, 200, 0)),  # the first frame
}


@pytest.mark.parametrize("name", sorted(UNUSUAL))
def test_every_mode_decodes_to_the_right_8_bit_colour(name):
    raw, colour = UNUSUAL[name]
    image = decode_rgb(raw)
    assert image.mode == "RGB" and image.size == (32, 32)
    assert np.abs(np.asarray(image).astype(int) - colour).max() <= 2, np.asarray(image)[0, 0]


def test_sixteen_bit_is_scaled_over_its_whole_range_not_clipped():
    ramp = Image.fromarray(np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1)))
    row = np.asarray(decode_rgb(encoded(ramp, "PNG")))[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row.astype(int)) >= 0)
    assert abs(int(row[128]) - 128) <= 1  # convert("RGB") alone gives 255 from here on


def test_exif_orientation_is_applied():
    image = np.asarray(decode_rgb(exif_rotated_jpeg()))
    assert image.shape == (48, 32, 3)  # upright: portrait
    assert image[2, 16, 0] > 150 and image[-3, 16, 2] > 150  # red on top, blue at the bottom


def test_a_folder_of_unusual_images_prepares_and_small_ones_are_counted(tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    for name, (raw, _) in UNUSUAL.items():
        (src / name).write_bytes(raw)
    (src / "rotated.jpg").write_bytes(exif_rotated_jpeg())
    (src / "small.png").write_bytes(encoded(Image.new("RGB", (12, 20), (9, 9, 9)), "PNG"))
    (src / "broken.png").write_bytes(sixteen_bit_png(1000)[:40])
    lines: list[str] = []
    cfg = DataConfig(name="folder", source=str(src), root=str(tmp_path / "shards"), resolution=16)
    manifest = prepare(cfg, log=lines.append)
    assert manifest["total"] == len(UNUSUAL) + 2 and manifest["source_count"] == len(UNUSUAL) + 3
    assert [s["id"] for s in manifest["skipped"]] == ["broken.png"]
    assert manifest["upscaled"] == [{"id": "small.png", "size": [12, 20]}]
    warning = [line for line in lines if line.startswith("WARNING")]
    assert warning == [
        "WARNING: 1 image(s) smaller than 16px were upscaled (e.g. small.png, 12x20): listed "
        f"under 'upscaled' in {tmp_path / 'shards' / 'manifest.json'}; remove them from the "
        "source or lower data.resolution"
    ]
    stored = {
        s["id.txt"].decode(): np.asarray(Image.open(io.BytesIO(s["img.png"])))
        for s in wds.WebDataset(str(tmp_path / "shards" / "shard-000000.tar"), shardshuffle=False)
    }
    assert abs(int(stored["grey16_mid.png"].mean()) - 128) <= 1  # was 255: clipped
    assert stored["rotated.jpg"][2, 8, 0] > 150 and stored["rotated.jpg"][-3, 8, 2] > 150
