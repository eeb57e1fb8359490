"""A line plot as a PNG with PIL alone (no plotting library on compute nodes): FID vs step."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


def line_plot(
    series: dict[str, list[tuple[float, float]]],
    path: Path,
    title: str,
    xlabel: str = "step",
    size: tuple[int, int] = (640, 400),
) -> Path:
    """One line per series (x ascending), axes with min/max ticks; written atomically."""
    w, h = size
    left, right, top, bottom = 70, 20, 40, 50
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    try:  # Pillow >= 10.1 ships a scalable font; the old bitmap one drops spaces
        draw.font = ImageFont.load_default(size=13)
    except TypeError:
        pass
    points = [p for pts in series.values() for p in pts]
    draw.text((left, 12), title, fill="black")
    if points:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

        def at(x: float, y: float) -> tuple[float, float]:
            px = left + (x - x0) / (x1 - x0) * (w - left - right)
            py = h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)
            return px, py

        draw.rectangle([left, top, w - right, h - bottom], outline="black")
        for label, (x, anchor) in {f"{x0:g}": (x0, "la"), f"{x1:g}": (x1, "ra")}.items():
            draw.text((at(x, y0)[0], h - bottom + 6), label, fill="black", anchor=anchor)
        draw.text((left - 6, h - bottom), f"{y0:.4g}", fill="black", anchor="rs")
        draw.text((left - 6, top), f"{y1:.4g}", fill="black", anchor="rt")
        draw.text(((w + left) / 2, h - 18), xlabel, fill="black", anchor="ms")
        colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
        for i, (name, pts) in enumerate(series.items()):
            colour = colours[i % len(colours)]
            xy = [at(x, y) for x, y in sorted(pts)]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for px, py in xy:
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
            draw.text((w - right - 8, top + 8 + 14 * i), name, fill=colour, anchor="ra")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    img.save(tmp)
    os.replace(tmp, path)
    return path
