"""The Jinja2 environment of the dashboard: templates shipped in the
package, autoescaping on for every template (every value from Redis goes
through it), and the filters that format times and durations."""

from __future__ import annotations

import time
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined


def age(seconds: Any) -> str:
    """12.3 -> "12.3s", 125 -> "2m 05s", 7300 -> "2h 01m"; "-" when unknown."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return "-"
    if value < 0:
        value = 0.0
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24:02d}h"


def epoch(seconds: Any) -> str:
    """Epoch seconds as a UTC time; "-" when missing."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))


def epoch_ms(milliseconds: Any) -> str:
    try:
        return epoch(float(milliseconds) / 1000)
    except (TypeError, ValueError):
        return "-"


def from_now(seconds: Any) -> str:
    """Epoch seconds as "in 5m 00s" or "3.0s ago", by this machine's clock."""
    try:
        delta = float(seconds) - time.time()
    except (TypeError, ValueError):
        return ""
    return f"in {age(delta)}" if delta >= 0 else f"{age(-delta)} ago"


def make_environment() -> Environment:
    env = Environment(loader=PackageLoader("greenq.web", "templates"),
                      autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(age=age, epoch=epoch, epoch_ms=epoch_ms, from_now=from_now)
    return env
