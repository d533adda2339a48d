"""Schedules without Redis: checking a schedule's arguments and computing
its fire times.

A schedule fires on a five-field cron expression read in a time zone
(cron parsed by cronsim, zones from zoneinfo), or every N seconds. Fire
times are epoch milliseconds. The next one is always the first fire time
strictly after "now" by Redis' clock, so fire times missed while nothing
ran collapse into the single one that fires on resume.

Daylight saving time, for cron: the expression is matched against wall
clock minutes. A wall-clock time that occurs twice (clocks go back) fires
once, at its first occurrence; one that does not exist (clocks go forward)
fires at the first minute that does exist after it, once, even when several
skipped minutes match.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import ParamsError

MAX_EVERY = 10 ** 9  # seconds (about 31 years): past this, `every` is surely a mistake
_MINUTE = timedelta(minutes=1)
_LONGEST_GAP = timedelta(days=2)  # wall-clock gaps are an hour or so; Samoa once skipped a day


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: `cron` in `tz`, or every `every_ms` ms."""

    cron: str | None
    every_ms: int | None
    tz: str

    @property
    def every(self) -> float | None:
        return None if self.every_ms is None else self.every_ms / 1000

    def fields(self) -> dict[str, str]:
        """How the timing is stored in the schedule's Redis hash."""
        return {"cron": self.cron or "", "every": "" if self.every_ms is None else
                str(self.every_ms), "tz": self.tz}


def zone(name: Any) -> ZoneInfo:
    """The ZoneInfo named `name` (an IANA name such as "Europe/Berlin")."""
    if not isinstance(name, str) or not name:
        raise ParamsError(f"tz must be an IANA time zone name such as 'Europe/Berlin', "
                          f"not {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: a name zoneinfo refuses to look up (an absolute path, "..")
        raise ParamsError(f"unknown time zone {name!r}") from None


def check_timing(cron: Any, every: Any, tz: Any) -> Timing:
    """The Timing of add_schedule's arguments; ParamsError when they are bad."""
    zone(tz)
    if (cron is None) == (every is None):
        raise ParamsError("give exactly one of cron (a five-field cron expression) or "
                          "every (seconds)")
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, (int, float)):
            raise ParamsError(f"every must be a number of seconds, not {type(every).__name__}")
        if not math.isfinite(every) or not 1 <= every <= MAX_EVERY:
            raise ParamsError(f"every must be at least 1 second (and at most {MAX_EVERY}), "
                              f"not {every!r}")
        return Timing(None, round(every * 1000), tz)
    if not isinstance(cron, str):
        raise ParamsError(f"cron must be a str, not {type(cron).__name__}")
    expr = " ".join(cron.split())
    if len(expr.split(" ")) != 5:
        raise ParamsError(f"cron must have five fields (minute hour day month weekday), "
                          f"not {cron!r}")
    try:
        next(CronSim(expr, datetime(2000, 1, 1)))
    except (CronSimError, StopIteration) as exc:
        raise ParamsError(f"bad cron expression {cron!r}: {exc or 'never fires'}") from None
    return Timing(expr, None, tz)


def timing_from_fields(cron: str, every: str, tz: str) -> Timing:
    """The Timing stored as Timing.fields() gave it."""
    return Timing(cron or None, int(every) if every else None, tz)


def next_fire_ms(timing: Timing, now_ms: int, previous_ms: int | None = None) -> int:
    """The first fire time strictly after `now_ms`. For `every`, fire times
    lie on the grid of `previous_ms` (the fire time just fired) plus whole
    periods, so a schedule keeps its rhythm; without one, one period from now."""
    if timing.every_ms is not None:
        if previous_ms is None:
            return now_ms + timing.every_ms
        periods = max(0, (now_ms - previous_ms) // timing.every_ms) + 1
        return previous_ms + periods * timing.every_ms
    assert timing.cron is not None
    return next_cron_fire_ms(timing.cron, zone(timing.tz), now_ms)


def next_cron_fire_ms(expr: str, tz: ZoneInfo, after_ms: int) -> int:
    """The first fire time of cron `expr` in zone `tz` strictly after
    `after_ms` (see the module's note on DST)."""
    after = datetime.fromtimestamp(after_ms / 1000, tz)
    # Wall-clock minutes after the one `after` lies in; in the second pass of
    # a repeated hour, the wall times ahead of it already fired in the first
    # pass, and the instant test below skips them.
    wall = after.replace(tzinfo=None, second=0, microsecond=0, fold=0)
    for candidate in CronSim(expr, wall):
        fire_ms = _instant_ms(candidate, tz)
        if fire_ms > after_ms:
            return fire_ms
    raise ParamsError(f"cron {expr!r} never fires")  # pragma: no cover - checked at add


def _exists(wall: datetime, tz: ZoneInfo) -> bool:
    aware = wall.replace(tzinfo=tz, fold=0)
    return aware.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) == wall


def _instant_ms(wall: datetime, tz: ZoneInfo) -> int:
    """Epoch ms of wall-clock time `wall` in `tz`: its first occurrence when
    it occurs twice (fold=0), the first existing minute after it when it
    falls in a gap."""
    if not _exists(wall, tz):
        limit = wall + _LONGEST_GAP
        while not _exists(wall, tz) and wall < limit:
            wall = wall.replace(second=0, microsecond=0) + _MINUTE
    aware = wall.replace(tzinfo=tz, fold=0)
    return int(aware.timestamp() * 1000)


def fire_job_id(name: str, fire_ms: int, max_length: int) -> str:
    """The deterministic id of the job fired for `name` at `fire_ms`:
    "sched:<name>:<fire ms>", with the name's hash in place of a name too
    long to fit in a job id."""
    job_id = f"sched:{name}:{fire_ms}"
    if len(job_id) <= max_length:
        return job_id
    return f"sched:#{hashlib.sha1(name.encode()).hexdigest()}:{fire_ms}"
