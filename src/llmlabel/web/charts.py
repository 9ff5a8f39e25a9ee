"""Geometry for the inline SVG charts of the dashboard: rectangles and tick labels, nothing else.

Pure functions of counts, so a chart can be checked by hand; the templates only draw them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    rects: list[Rect] = field(default_factory=list)
    ticks: list[tuple[float, str]] = field(default_factory=list)  # x position, label under the axis
    y_max: int = 0
    baseline: float = 0.0
    left: float = 0.0


def columns(
    series: list[tuple[str, str, list[int]]], labels: list[str], *,
    width: int = 720, height: int = 170, tick_every: int = 3,
) -> Chart:
    """Stacked columns, one per label; ``series`` is (name, css class, counts), bottom first."""
    left, top, bottom = 36.0, 12.0, 22.0
    n = len(labels)
    totals = [sum(s[2][i] for s in series) for i in range(n)]
    y_max = max([*totals, 1])
    plot_h = height - top - bottom
    slot = (width - left) / max(n, 1)
    bar_w = slot * 0.72
    rects: list[Rect] = []
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - bar_w) / 2
        y = height - bottom
        for name, css, counts in series:
            h = counts[i] / y_max * plot_h
            if counts[i]:
                y -= h
                rects.append(Rect(round(x, 1), round(y, 1), round(bar_w, 1), round(h, 1), css,
                                  f"{label}: {counts[i]} {name}"))
    ticks = [(round(left + i * slot + slot / 2, 1), labels[i]) for i in range(0, n, tick_every)]
    return Chart(width, height, rects, ticks, y_max, height - bottom, left)


def segments(parts: list[tuple[str, str, int]], *, width: int = 720, height: int = 22) -> Chart:
    """One horizontal bar split into (name, css class, count) parts, left to right."""
    total = sum(p[2] for p in parts)
    rects: list[Rect] = []
    x = 0.0
    for name, css, count in parts:
        if not count:
            continue
        w = count / total * width
        share = count / total
        rects.append(Rect(round(x, 1), 0.0, round(w, 1), float(height), css, f"{name}: {count} ({share:.0%})"))
        x += w
    return Chart(width, height, rects, y_max=total)
