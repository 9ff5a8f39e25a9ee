"""Inline SVG charts, drawn in Python: the report must open offline, from an e-mail attachment,
years later, so it carries no script, no CDN and no font beyond the reader's own.

Each function returns one ``<svg>`` element with explicit width, height and viewBox (so it has a
size before any CSS applies) and a ``<title>`` per mark, which browsers show as a tooltip. Text
is escaped here; the template inserts the markup as is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#2f6fb0", "#e08a1e", "#3a9a5b", "#b03a48", "#7a5ab5", "#8a8a8a", "#c9b02b", "#2fa3a3")
INK, GRID, MUTED = "#222", "#e3e3e3", "#777"


def _open(width: float, height: float, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(label)}">')


def _text(x: float, y: float, s: str, *, anchor: str = "start", size: int = 11, fill: str = INK, weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" '
            f'font-weight="{weight}">{escape(s)}</text>')


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str, extra: str = "") -> str:
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{fill}" {extra}>'
            f"<title>{escape(title)}</title></rect>")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= v:
            return m * exp
    return 10 * exp


def _num(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.3g}"


def stacked_bar(parts: Sequence[tuple[str, float]], *, width: int = 720, title: str = "") -> str:
    """One horizontal bar split into named parts (e.g. items per status), with a legend."""
    total = sum(v for _, v in parts) or 1.0
    h, bar_h = 54, 24
    out = [_open(width, h, title or "share")]
    x = 0.0
    for i, (name, v) in enumerate(parts):
        w = v / total * width
        if v > 0:
            out.append(_rect(x, 0, w, bar_h, PALETTE[i % len(PALETTE)], f"{name}: {_num(v)} ({v / total:.1%})"))
        x += w
    lx = 0.0
    for i, (name, v) in enumerate(parts):
        out.append(_rect(lx, 34, 12, 12, PALETTE[i % len(PALETTE)], name))
        label = f"{name} {_num(v)} ({v / total:.0%})"
        out.append(_text(lx + 16, 44, label))
        lx += 24 + 7 * len(label)
    out.append("</svg>")
    return "".join(out)


def hbars(rows: Sequence[tuple[str, float]], *, width: int = 720, unit: str = "", title: str = "") -> str:
    """Horizontal bars, one per row (e.g. USD per labeler)."""
    row_h, left, right = 22, 170, 90
    h = max(row_h * len(rows), row_h) + 8
    top = _nice_max(max([v for _, v in rows] + [0.0]))
    out = [_open(width, h, title or "bars")]
    plot = width - left - right
    for i, (name, v) in enumerate(rows):
        y = 4 + i * row_h
        out.append(_text(left - 6, y + 15, name[:28], anchor="end"))
        out.append(_rect(left, y + 3, v / top * plot, row_h - 6, PALETTE[0], f"{name}: {unit}{_num(v)}"))
        out.append(_text(left + v / top * plot + 4, y + 15, f"{unit}{v:,.4f}" if unit == "$" else f"{_num(v)}{unit}",
                         fill=MUTED))
    out.append("</svg>")
    return "".join(out)


def columns(labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *, width: int = 720,
            height: int = 200, title: str = "") -> str:
    """Stacked columns over time (e.g. votes per day, human and machine)."""
    left, bottom, top_pad = 48, 30, 18
    n = max(len(labels), 1)
    totals = [sum(s[1][i] for s in series) for i in range(len(labels))]
    top = _nice_max(max([*totals, 0.0]))
    plot_h, plot_w = height - bottom - top_pad, width - left - 8
    slot = plot_w / n
    out = [_open(width, height, title or "columns")]
    for frac in (0, 0.5, 1):
        y = top_pad + plot_h * (1 - frac)
        out.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(_text(left - 6, y + 4, _num(top * frac), anchor="end", fill=MUTED, size=10))
    for i, lab in enumerate(labels):
        x = left + i * slot + slot * 0.15
        y = top_pad + plot_h
        for j, (name, vals) in enumerate(series):
            hgt = vals[i] / top * plot_h
            if vals[i]:
                y -= hgt
                out.append(_rect(x, y, slot * 0.7, hgt, PALETTE[j % len(PALETTE)], f"{lab}: {_num(vals[i])} {name}"))
        if n <= 16 or i % max(1, n // 8) == 0:
            out.append(_text(x + slot * 0.35, height - bottom + 14, lab, anchor="middle", size=10, fill=MUTED))
    lx = left
    for j, (name, _) in enumerate(series):
        out.append(_rect(lx, 2, 10, 10, PALETTE[j % len(PALETTE)], name))
        out.append(_text(lx + 14, 11, name, size=10))
        lx += 22 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def reliability_diagram(rows: Sequence[tuple[float, float, int, float, float]], *, size: int = 320, title: str = "") -> str:
    """Accuracy against confidence per bin: bars of measured accuracy, the diagonal of perfect
    calibration, a dot at each bin's mean confidence; bar opacity shows how many items."""
    pad_l, pad_b, pad_t, pad_r = 44, 40, 10, 10
    w, h = size + pad_l + pad_r, size + pad_t + pad_b
    out = [_open(w, h, title or "reliability diagram")]

    def px(x: float) -> float:
        return pad_l + x * size

    def py(y: float) -> float:
        return pad_t + (1 - y) * size

    for t in (0, 0.25, 0.5, 0.75, 1):
        out.append(f'<line x1="{px(0):.1f}" x2="{px(1):.1f}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="{GRID}"/>')
        out.append(_text(pad_l - 6, py(t) + 4, f"{t:.2f}", anchor="end", size=10, fill=MUTED))
        out.append(_text(px(t), h - pad_b + 14, f"{t:.2f}", anchor="middle", size=10, fill=MUTED))
    most = max([r[2] for r in rows] + [1])
    for lo, hi, n, conf, acc in rows:
        opacity = 0.35 + 0.65 * n / most
        out.append(_rect(px(lo) + 1, py(acc), (hi - lo) * size - 2, acc * size, PALETTE[0],
                         f"confidence {lo:.1f}–{hi:.1f}: {n} items, accuracy {acc:.3f}, mean confidence {conf:.3f}",
                         f'fill-opacity="{opacity:.2f}"'))
        out.append(f'<circle cx="{px(conf):.1f}" cy="{py(acc):.1f}" r="3" fill="{PALETTE[1]}">'
                   f"<title>{escape(f'{n} items: mean confidence {conf:.3f}, accuracy {acc:.3f}')}</title></circle>")
    out.append(f'<line x1="{px(0):.1f}" y1="{py(0):.1f}" x2="{px(1):.1f}" y2="{py(1):.1f}" stroke="{INK}" '
               'stroke-dasharray="4 3"/>')
    out.append(_text(px(0.5), h - 6, "posterior confidence (top label)", anchor="middle", size=11))
    out.append(f'<text x="12" y="{py(0.5):.1f}" font-size="11" text-anchor="middle" fill="{INK}" '
               f'transform="rotate(-90 12 {py(0.5):.1f})">accuracy on gold</text>')
    out.append("</svg>")
    return "".join(out)


def heatmap(matrix: Sequence[Sequence[float]], rows: Sequence[str], cols: Sequence[str], *, cell: int = 34,
            title: str = "", row_title: str = "gold", col_title: str = "said") -> str:
    """A confusion matrix: cell shade by share of its row, count written in the cell."""
    label_w = min(140, 14 + 7 * max([len(r) for r in rows] + [4]))
    top = 24 + int(5.5 * min(max([len(c) for c in cols] + [4]), 14))
    w, h = label_w + cell * len(cols) + 10, top + cell * len(rows) + 24
    out = [_open(w, h, title or "confusion matrix")]
    out.append(_text(label_w + cell * len(cols) / 2, 12, col_title, anchor="middle", size=11, fill=MUTED))
    for j, c in enumerate(cols):
        x = label_w + j * cell + cell / 2
        out.append(f'<text x="{x:.1f}" y="{top - 4}" font-size="10" fill="{INK}" transform="rotate(-45 {x:.1f} {top - 4})">'
                   f"{escape(c[:14])}</text>")
    for i, r in enumerate(rows):
        total = sum(matrix[i]) or 1
        y = top + i * cell
        out.append(_text(label_w - 6, y + cell / 2 + 4, r[:18], anchor="end", size=10))
        for j, v in enumerate(matrix[i]):
            share = v / total
            diag = i == j
            colour = "58,154,91" if diag else "176,58,72"
            out.append(_rect(label_w + j * cell, y, cell - 2, cell - 2, f"rgba({colour},{0.08 + 0.85 * share:.2f})",
                             f"{row_title} {r}, {col_title} {cols[j]}: {_num(v)} ({share:.0%} of the row)"))
            out.append(_text(label_w + j * cell + cell / 2 - 1, y + cell / 2 + 3, _num(v), anchor="middle", size=10,
                             fill="#fff" if share > 0.6 else INK))
    out.append(_text(6, h - 6, f"rows: {row_title}", size=10, fill=MUTED))
    out.append("</svg>")
    return "".join(out)


def intervals(rows: Sequence[tuple[str, float, float, float]], *, lo: float = 0.0, hi: float = 1.0, width: int = 720,
              title: str = "", reference: float | None = None) -> str:
    """Point estimates with their intervals on a common axis (a forest plot)."""
    row_h, left, right = 24, 230, 110
    h = row_h * max(len(rows), 1) + 26
    plot = width - left - right
    out = [_open(width, h, title or "intervals")]

    def px(v: float) -> float:
        return left + (min(max(v, lo), hi) - lo) / (hi - lo) * plot

    for t in (lo, (lo + hi) / 2, hi):
        out.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="0" y2="{h - 20}" stroke="{GRID}"/>')
        out.append(_text(px(t), h - 6, f"{t:g}", anchor="middle", size=10, fill=MUTED))
    if reference is not None:
        out.append(f'<line x1="{px(reference):.1f}" x2="{px(reference):.1f}" y1="0" y2="{h - 20}" stroke="{MUTED}" '
                   'stroke-dasharray="3 3"/>')
    for i, (name, est, low, high) in enumerate(rows):
        y = i * row_h + row_h / 2 + 2
        out.append(_text(left - 8, y + 4, name[:34], anchor="end"))
        if math.isnan(est):
            out.append(_text(left, y + 4, "not enough data", fill=MUTED))
            continue
        if not (math.isnan(low) or math.isnan(high)):
            out.append(f'<line x1="{px(low):.1f}" x2="{px(high):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{PALETTE[0]}" '
                       f'stroke-width="3"><title>{escape(f"{name}: {est:.3f} [{low:.3f}, {high:.3f}]")}</title></line>')
        out.append(f'<circle cx="{px(est):.1f}" cy="{y:.1f}" r="5" fill="{PALETTE[1]}">'
                   f"<title>{escape(f'{name}: {est:.3f}')}</title></circle>")
        iv = "" if math.isnan(low) else f" [{low:.3f}, {high:.3f}]"
        out.append(_text(width - right + 8, y + 4, f"{est:.3f}{iv}", size=10, fill=MUTED))
    out.append("</svg>")
    return "".join(out)
