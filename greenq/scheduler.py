"""The firing loop: one greenlet per started process (in-process queue or
master) that submits the jobs of due schedules.

No leader is elected. Every such process reads the soonest schedules and
Redis' clock in one round trip, sleeps until the soonest fire time (by
Redis' clock, re-reading at least every REFRESH seconds so new and changed
schedules are seen), then asks fire_schedule.lua to fire each due one. The
script fires an occurrence only for the caller that still finds it stored,
so every fire time gives exactly one job however many processes race for it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import gevent
import gevent.event

from . import config
from .broker import REDIS_TROUBLE, Broker
from .errors import BrokerError, GreenQError
from .schedules import fire_job_id, next_fire_ms, timing_from_fields

log = logging.getLogger(__name__)

REFRESH = 1.0        # seconds between reads of the schedule set at most
BATCH = 100          # schedules read (and fired) per round at most
_RETRY_NEXT = 3      # recomputations of a next fire time that Redis' clock overtook
_BACKOFF = (0.1, 2.0)  # first and longest wait after Redis trouble


def _text(value: bytes | None) -> str:
    return (value or b"").decode()


class Scheduler:
    """Fires the due schedules of `broker`'s queue until stop()."""

    def __init__(self, broker: Broker, emit: Callable[[str, Any], None]) -> None:
        self.broker = broker
        self._emit = emit
        self._stopping = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        self._outage = False
        self._broken: set[tuple[str, int]] = set()  # occurrences whose next time cannot be computed
        self.fired = 0  # jobs this process fired (coalesced ones included)

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        """Stop firing, at once: a shutdown must not wait for Redis here. A
        fire cut short is one script call, which Redis ran whole or not at
        all (then another process, or this one's next start, fires it)."""
        self._stopping.set()
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1)

    def _loop(self) -> None:
        backoff = _BACKOFF[0]
        while not self._stopping.is_set():
            try:
                wait = self.run_once()
                backoff = _BACKOFF[0]
                if self._outage:
                    log.info("scheduler: Redis answers again")
                    self._outage = False
            except REDIS_TROUBLE as exc:
                if not self._outage:
                    log.warning("scheduler: Redis trouble, firing paused: %s", exc)
                    self._outage = True
                wait, backoff = backoff, min(backoff * 2, _BACKOFF[1])
            except Exception as exc:  # noqa: BLE001 - a bug must not end the loop
                log.exception("scheduler: unexpected error")
                self._emit("error", BrokerError(f"scheduler loop: {exc!r}"))
                wait = REFRESH
            self._stopping.wait(wait)

    def run_once(self) -> float:
        """Fire what is due now; return how long to sleep before the next round."""
        now_ms, entries = self.broker.due_schedules(BATCH)
        read_at = time.monotonic()
        entries = [entry for entry in entries if entry not in self._broken]
        due = [(name, fire_ms) for name, fire_ms in entries if fire_ms <= now_ms]
        if due:
            fired_any = False
            definitions = self.broker.schedule_definitions([name for name, _ in due])
            for (name, fire_ms), definition in zip(due, definitions):
                if self._stopping.is_set():
                    break
                # Redis' now as of this moment: its clock at the read, plus
                # what elapsed here since (a duration, not a local date).
                now = now_ms + int((time.monotonic() - read_at) * 1000)
                fired_any |= self._fire(name, fire_ms, definition, now)
            # Fired: read again at once (more may be due). Nothing fired (a
            # schedule changed under us, or others fired first): a short pause.
            return 0.0 if fired_any else 0.05
        if not entries:
            return REFRESH
        return min(REFRESH, max(0.0, (entries[0][1] - now_ms) / 1000))

    def _fire(self, name: str, fire_ms: int, definition: dict[bytes, bytes], now_ms: int) -> bool:
        if not definition or (name, fire_ms) in self._broken:
            return False
        fields = {key: _text(definition.get(key.encode())) for key in ("cron", "every", "tz")}
        try:
            timing = timing_from_fields(fields["cron"], fields["every"], fields["tz"])
        except (ValueError, GreenQError) as exc:
            self._report_broken(name, fire_ms, exc)
            return False
        job_id = fire_job_id(name, fire_ms, config.MAX_ID_LENGTH)
        for _ in range(_RETRY_NEXT):
            try:
                next_ms = next_fire_ms(timing, now_ms, previous_ms=fire_ms)
            except (ValueError, GreenQError) as exc:  # a zone gone from this machine's tzdata
                self._report_broken(name, fire_ms, exc)
                return False
            outcome, fired_id = self.broker.fire_schedule(name, fire_ms, next_ms, fields, job_id)
            if outcome != -2:
                break
            now_ms = self.broker.redis_now_ms()  # our estimate lagged behind Redis' clock
        if outcome == 1:
            self.fired += 1
            log.debug("scheduler: %s fired (occurrence %s) as job %s", name, fire_ms, fired_id)
            return True
        return False

    def _report_broken(self, name: str, fire_ms: int, exc: Exception) -> None:
        self._broken.add((name, fire_ms))
        log.error("scheduler: schedule %r cannot be fired here: %s", name, exc)
        self._emit("error", BrokerError(f"schedule {name!r} cannot be fired: {exc}"))
