"""Percentiles, the printed table and the Markdown report of a benchmark run (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def fmt_seconds(seconds: float) -> str:
    """Milliseconds below 1 s, else seconds; three significant digits."""
    if seconds != seconds:  # NaN: nothing measured
        return "-"
    if seconds >= 1:
        return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.2f} s"
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def fmt_ratio(value: float, baseline: float) -> str:
    if not baseline or value != value or baseline != baseline:
        return "-"
    return f"{value / baseline:.2f}x" if value / baseline < 10 else f"{value / baseline:.0f}x"


@dataclass(frozen=True)
class Row:
    """One line of the results table: a figure, its baseline from the same run, the ratio, the goal."""

    figure: str
    value: str
    baseline: str = "-"
    ratio: str = "-"
    goal: str = "-"


HEADER = Row("figure", "overlayd", "baseline (same run)", "ratio", "goal (issue 6)")


def render_table(rows: Sequence[Row]) -> str:
    """Fixed-width text table for the terminal."""
    cells = [(r.figure, r.value, r.baseline, r.ratio, r.goal) for r in (HEADER, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown_table(rows: Sequence[Row]) -> str:
    cells = [(r.figure, r.value, r.baseline, r.ratio, r.goal) for r in (HEADER, *rows)]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "| " + " | ".join("---" for _ in range(5)) + " |")
    return "\n".join(lines)
