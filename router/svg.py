"""Bar charts as inline SVG text: stacked bars with an optional line over them, for the HTML report.

Hand-written rather than a charting library: the report needs one kind of chart (stacked
bars, a line over them: daily spend, and single bars: turnaround histograms), the page must
fetch nothing (pygal's charts link their tooltip script from a CDN by default), and plain SVG
elements are what a test can read back. Every text is escaped; nothing here runs in the browser.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 760
HEIGHT = 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 16, 34, 44
_MAX_X_LABELS = 10


@dataclass(frozen=True)
class Series:
    """One named sequence of values, one per x label, drawn in `color`."""

    name: str
    color: str
    values: Sequence[float]


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above `value` (1 for 0 or less)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10.0 * power


def _num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def bar_chart(
    labels: Sequence[str],
    bars: Sequence[Series],
    *,
    title: str,
    line: Series | None = None,
    y_format: Callable[[float], str] = lambda v: f"{v:g}",
    chart_id: str = "",
    integers: bool = False,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """An SVG chart: `bars` stacked at each label, `line` drawn across the bar centres; with
    `integers`, the values are counts and the gridlines fall on whole numbers."""
    n = len(labels)
    for s in (*bars, *([line] if line else [])):
        if len(s.values) != n:
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {n} labels")
    totals = [sum(s.values[i] for s in bars) for i in range(n)]
    highest = max([*totals, *(line.values if line else ()), 0.0])
    # Counts get a top that four gridlines divide into whole numbers.
    top = max(4.0, 4.0 * math.ceil(highest / 4)) if integers else nice_ceiling(highest)
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    slot = plot_w / n if n else plot_w
    bar_w = max(1.0, slot * 0.72)

    def y(v: float) -> float:
        return _TOP + plot_h - plot_h * (v / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}"'
        f' width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for k in range(5):  # gridlines and y labels at 0, 1/4 ... of the top
        v = top * k / 4
        out.append(
            f'<line class="grid" x1="{_LEFT}" x2="{width - _RIGHT}" y1="{_num(y(v))}" y2="{_num(y(v))}"'
            ' stroke="#ddd" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{_LEFT - 6}" y="{_num(y(v) + 4)}" text-anchor="end" font-size="11"'
            f' fill="#555">{escape(y_format(v))}</text>'
        )
    every = max(1, math.ceil(n / _MAX_X_LABELS))
    for i, label in enumerate(labels):
        x = _LEFT + slot * i + (slot - bar_w) / 2
        base = 0.0
        for s in bars:
            v = s.values[i]
            if v > 0:
                out.append(
                    f'<rect class="bar" data-series="{escape(s.name)}" x="{_num(x)}" y="{_num(y(base + v))}"'
                    f' width="{_num(bar_w)}" height="{_num(y(base) - y(base + v))}" fill="{s.color}">'
                    f"<title>{escape(label)} {escape(s.name)}: {escape(y_format(v))}</title></rect>"
                )
            base += v
        if i % every == 0:
            out.append(
                f'<text x="{_num(_LEFT + slot * i + slot / 2)}" y="{height - _BOTTOM + 16}"'
                f' text-anchor="middle" font-size="11" fill="#555">{escape(label)}</text>'
            )
    if line is not None and n:
        points = [(_LEFT + slot * i + slot / 2, y(v)) for i, v in enumerate(line.values)]
        coordinates = " ".join(f"{_num(px)},{_num(py)}" for px, py in points)
        out.append(
            f'<polyline class="line" data-series="{escape(line.name)}" points="{coordinates}" fill="none"'
            f' stroke="{line.color}" stroke-width="2" stroke-dasharray="5 3"/>'
        )
        for (px, py), label, v in zip(points, labels, line.values, strict=True):  # one day shows too
            out.append(
                f'<circle cx="{_num(px)}" cy="{_num(py)}" r="3" fill="{line.color}">'
                f"<title>{escape(label)} {escape(line.name)}: {escape(y_format(v))}</title></circle>"
            )
    out.append(
        f'<line x1="{_LEFT}" x2="{width - _RIGHT}" y1="{_num(y(0))}" y2="{_num(y(0))}" stroke="#888"/>'
    )
    x = float(_LEFT)
    for s in (*bars, *([line] if line else [])):  # the legend, along the top
        swatch = (
            f'<line x1="{_num(x)}" x2="{_num(x + 14)}" y1="13" y2="13" stroke="{s.color}" stroke-width="2"'
            ' stroke-dasharray="5 3"/>'
            if s is line
            else f'<rect x="{_num(x)}" y="7" width="12" height="12" fill="{s.color}"/>'
        )
        out.append(swatch)
        out.append(f'<text x="{_num(x + 18)}" y="17" font-size="12" fill="#222">{escape(s.name)}</text>')
        x += 30 + 7 * len(s.name)
    out.append("</svg>")
    return "".join(out)
