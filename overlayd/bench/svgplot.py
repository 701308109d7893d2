"""A step chart of time series as a standalone SVG (pure; no plotting library needed).

Used for docs/ pictures drawn from a real Prometheus's data: each series is a list of
(unix time, value) points as ``/api/v1/query_range`` returns them; marks are labelled moments
(a fault put in, taken out).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 50, 190, 34, 40  # margins: the legend sits on the right
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[tuple[float, float], ...]  # (unix time, value), in time order


@dataclass(frozen=True)
class Mark:
    at: float  # unix time
    label: str


def step_chart(title: str, series: list[Series], marks: list[Mark], y_label: str) -> str:
    """The SVG text: seconds since the first point on x, values on y, one step line per series."""
    times = [t for s in series for t, _ in s.points] + [m.at for m in marks]
    if not times:
        raise ValueError("nothing to draw: no points and no marks")
    start, end = min(times), max(times)
    top = max([v for s in series for _, v in s.points] + [1.0])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - start) / max(end - start, 1e-9) * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - v / top * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="black"/>',
        f'<text x="12" y="{TOP + plot_h / 2}" transform="rotate(-90 12 {TOP + plot_h / 2})" '
        f'text-anchor="middle">{escape(y_label)}</text>',
    ]
    for value in sorted({0.0, top / 2, top}):
        out.append(f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:g}</text>')
        out.append(f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{LEFT + plot_w}" y2="{y(value):.1f}" '
                   'stroke="#ddd"/>')  # fmt: skip
    span = end - start
    tick = next((s for s in (5, 10, 15, 30, 60, 120, 300, 600) if span / s <= 10), 1800)
    for second in range(0, int(span) + 1, tick):
        out.append(f'<text x="{x(start + second):.1f}" y="{TOP + plot_h + 15}" '
                   f'text-anchor="middle">{second}</text>')  # fmt: skip
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">seconds</text>')
    for index, mark in enumerate(marks):  # labels stepped down, so close marks stay readable
        out.append(f'<line x1="{x(mark.at):.1f}" y1="{TOP}" x2="{x(mark.at):.1f}" y2="{TOP + plot_h}" '
                   'stroke="#888" stroke-dasharray="4 3"/>')  # fmt: skip
        label_y = TOP + 10 + 12 * index
        out.append(f'<text x="{x(mark.at) + 3:.1f}" y="{label_y}" fill="#555">{escape(mark.label)}</text>')
    for index, line in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        path = [  # a step line: the value holds until the next point
            f"M{x(t):.1f},{y(v):.1f}" if not n else f"H{x(t):.1f} V{y(v):.1f}"
            for n, (t, v) in enumerate(line.points)
        ]
        if path:
            out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        legend_y = TOP + 14 + index * 16
        out.append(f'<line x1="{WIDTH - RIGHT + 12}" y1="{legend_y - 4}" x2="{WIDTH - RIGHT + 30}" '
                   f'y2="{legend_y - 4}" stroke="{colour}" stroke-width="2"/>')  # fmt: skip
        out.append(f'<text x="{WIDTH - RIGHT + 34}" y="{legend_y}">{escape(line.name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
