"""`greenq stats --watch`: the queue's counts, redrawn in place (rich's Live
display) every --interval seconds until Ctrl-C, with how fast each count
moves: the change between two successive reads over the time between them,
in jobs per second. Beside the states, the jobs ended by outcome (the
counters the scripts keep, greenq/metrics.py), whose rates are the queue's
throughput.

Two reads per draw (stats() and the counters, each one round trip per Redis
node), so a watch costs the queue little, once per interval. When Redis cannot
be reached the view says so and keeps trying: a watch on a wall screen
outlives a failover.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import metrics

# Counts whose rise is trouble: their rate shows red when it climbs.
TROUBLE = ("failed", "failed total")


def rates(before: dict[str, int] | None, after: dict[str, int], seconds: float) -> dict[str, float]:
    """Per-second change of each count between two stats() results."""
    if before is None or seconds <= 0:
        return {}
    return {name: (value - before.get(name, value)) / seconds for name, value in after.items()}


def _rate(name: str, per_second: float | None) -> Text:
    if per_second is None:
        return Text("…", style="dim")
    if abs(per_second) < 0.005:
        return Text("0/s", style="dim")
    style = "red" if name in TROUBLE and per_second > 0 else "green" if per_second < 0 else "yellow"
    return Text(f"{per_second:+.2f}/s", style=style)


def render(title: str, numbers: dict[str, int] | None, per_second: dict[str, float],
           error: str | None = None) -> Any:
    """The view of one draw: a table of counts and rates, and a status line."""
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("state")
    table.add_column("count", justify="right")
    table.add_column("change", justify="right")
    for name, value in (numbers or {}).items():
        table.add_row(name, str(value), _rate(name, per_second.get(name)))
    status = Text(f"{datetime.now():%H:%M:%S}  Ctrl-C to quit", style="dim")
    if error:
        status = Text(f"{datetime.now():%H:%M:%S}  {error}; trying again", style="bold red")
    return Group(table, status)


def watch(queue: Any, interval: float, console: Console | None = None) -> int:
    """Redraw `queue`'s stats every `interval` seconds until Ctrl-C; 0."""
    title = f"greenq {queue.namespace}:{queue.queue_id}"
    console = console or Console()
    before: dict[str, int] | None = None
    numbers: dict[str, int] | None = None
    per_second: dict[str, float] = {}
    taken = 0.0
    try:
        with Live(render(title, None, {}), console=console, auto_refresh=False) as live:
            while True:
                error = None
                try:
                    now, latest = time.monotonic(), queue.stats()
                    latest.update((f"{outcome} total", count)
                                  for outcome, count in metrics.outcome_totals(queue).items())
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    error = f"Redis unreachable ({exc})"
                else:
                    before, numbers = numbers, latest
                    per_second = rates(before, numbers, now - taken)
                    taken = now
                live.update(render(title, numbers, per_second, error),
                            refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        pass  # the way out: the last view stays on screen
    return 0
