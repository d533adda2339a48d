"""The throughput chart: per-minute history (greenq.metrics.history) turned
into the geometry of an SVG bar chart the template draws. Drawn on the
server so the page needs no script to show it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

# Stacked in this order, bottom up; each has a CSS class in greenq.css.
SERIES = ("succeeded", "retried", "failed", "cancelled")

WIDTH, HEIGHT = 720, 180          # the SVG's viewBox
LEFT, BOTTOM, TOP = 44, 22, 8     # room for the y labels, the x labels, the top label


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str
    title: str


@dataclass
class Chart:
    bars: list[Bar] = field(default_factory=list)
    x_labels: list[tuple[float, str]] = field(default_factory=list)
    y_labels: list[tuple[float, str]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: float = HEIGHT - BOTTOM


def _count(row: dict[str, Any], name: str) -> int:
    try:
        return max(0, int(row.get(name) or 0))
    except (TypeError, ValueError):
        return 0


def build(history: list[dict[str, Any]]) -> Chart | None:
    """The chart of `history` (oldest minute first, as metrics.history gives
    it); None when there is no minute to draw. A chart without bars: no
    job ended in those minutes."""
    rows = sorted((row for row in history if row.get("minute") is not None),
                  key=lambda row: int(row["minute"]))
    if not rows:
        return None
    chart = Chart(totals={name: sum(_count(row, name) for row in rows) for name in SERIES})
    peak = max(sum(_count(row, name) for name in SERIES) for row in rows) or 1
    plot_height = HEIGHT - BOTTOM - TOP
    step = (WIDTH - LEFT) / len(rows)
    label_every = max(1, len(rows) // 6)
    for index, row in enumerate(rows):
        x = LEFT + index * step
        base = HEIGHT - BOTTOM
        minute = time.strftime("%H:%M", time.gmtime(int(row["minute"])))
        for name in SERIES:
            value = _count(row, name)
            if not value:
                continue
            height = plot_height * value / peak
            base -= height
            chart.bars.append(Bar(round(x + step * 0.1, 2), round(base, 2),
                                  round(step * 0.8, 2), round(height, 2), name,
                                  f"{minute} UTC: {value} {name}"))
        if index % label_every == 0:
            chart.x_labels.append((round(x + step / 2, 2), minute))
    for fraction in (0, 0.5, 1):
        chart.y_labels.append((round(HEIGHT - BOTTOM - plot_height * fraction, 2),
                               f"{peak * fraction:g}"))
    return chart
