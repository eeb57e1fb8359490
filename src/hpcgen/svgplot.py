"""Line charts as inline SVG for the HTML report: no plotting library, no external file."""

from __future__ import annotations

import math
from html import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def _label(value: float) -> str:
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.1e}"
    return f"{value:.6g}"


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    title: str,
    xlabel: str = "step",
    size: tuple[int, int] = (560, 300),
) -> str:
    """One polyline per series (non-finite points dropped), nice ticks, a legend."""
    w, h = size
    left, right, top, bottom = 64, 16, 30, 56
    clean = {
        name: sorted((x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y))
        for name, pts in series.items()
    }
    clean = {name: pts for name, pts in clean.items() if pts}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    if not clean:
        parts.append(f'<text x="{left}" y="{h // 2}" font-size="12">no data yet</text></svg>')
        return "".join(parts)
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts]
    xt, yt = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)

    for y in yt:
        parts.append(
            f'<line x1="{left}" x2="{w - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
            'stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{py(y) + 4:.1f}" font-size="11" '
            f'text-anchor="end">{_label(y)}</text>'
        )
    for x in xt:
        parts.append(
            f'<text x="{px(x):.1f}" y="{h - bottom + 16}" font-size="11" '
            f'text-anchor="middle">{_label(x)}</text>'
        )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" '
        'fill="none" stroke="#444"/>'
        f'<text x="{(left + w - right) / 2:.0f}" y="{h - bottom + 32}" font-size="11" '
        f'text-anchor="middle">{escape(xlabel)}</text>'
    )
    for i, (name, pts) in enumerate(clean.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        if len(pts) == 1:
            parts.append(f'<circle cx="{coords.split(",")[0]}" cy="{coords.split(",")[1]}" ')
            parts.append(f'r="3" fill="{colour}"/>')
        else:
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
        lx = left + 110 * i
        parts.append(
            f'<rect x="{lx}" y="{h - 14}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{h - 5}" font-size="11">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
