"""Line charts as inline SVG for the HTML report: no plotting library, no external file."""

from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Frame:
    """The plot area of a (w, h) chart and the data range its ticks cover."""

    w: int
    h: int
    x0: float
    x1: float
    y0: float
    y1: float
    left: int = 64
    right: int = 16
    top: int = 30
    bottom: int = 56

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.w - self.left - self.right)

    def py(self, y: float) -> float:
        span = self.h - self.top - self.bottom
        return self.h - self.bottom - (y - self.y0) / (self.y1 - self.y0) * span


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    title: str,
    xlabel: str = "step",
    size: tuple[int, int] = (560, 300),
) -> str:
    """One polyline per series (non-finite points dropped), nice ticks, a legend."""
    w, h = size
    left = _Frame.left
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
    frame = _Frame(w, h, xt[0], xt[-1], yt[0], yt[-1])
    parts += _axes(frame, xt, yt, xlabel) + _polylines(frame, clean)
    parts.append("</svg>")
    return "".join(parts)


def _axes(f: _Frame, xt: list[float], yt: list[float], xlabel: str) -> list[str]:
    """Grid lines and labels at the ticks, the frame, the x axis' label."""
    parts = []
    for y in yt:
        parts.append(
            f'<line x1="{f.left}" x2="{f.w - f.right}" y1="{f.py(y):.1f}" y2="{f.py(y):.1f}" '
            'stroke="#ddd"/>'
            f'<text x="{f.left - 6}" y="{f.py(y) + 4:.1f}" font-size="11" '
            f'text-anchor="end">{_label(y)}</text>'
        )
    for x in xt:
        parts.append(
            f'<text x="{f.px(x):.1f}" y="{f.h - f.bottom + 16}" font-size="11" '
            f'text-anchor="middle">{_label(x)}</text>'
        )
    parts.append(
        f'<rect x="{f.left}" y="{f.top}" width="{f.w - f.left - f.right}" '
        f'height="{f.h - f.top - f.bottom}" fill="none" stroke="#444"/>'
        f'<text x="{(f.left + f.w - f.right) / 2:.0f}" y="{f.h - f.bottom + 32}" font-size="11" '
        f'text-anchor="middle">{escape(xlabel)}</text>'
    )
    return parts


def _polylines(f: _Frame, clean: dict[str, list[tuple[float, float]]]) -> list[str]:
    """One polyline (a dot for a single point) and one legend entry per series."""
    parts = []
    for i, (name, pts) in enumerate(clean.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in pts)
        if len(pts) == 1:
            parts.append(f'<circle cx="{coords.split(",")[0]}" cy="{coords.split(",")[1]}" ')
            parts.append(f'r="3" fill="{colour}"/>')
        else:
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
        lx = f.left + 110 * i
        parts.append(
            f'<rect x="{lx}" y="{f.h - 14}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{f.h - 5}" font-size="11">{escape(name)}</text>'
        )
    return parts
