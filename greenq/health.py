"""Redis outage bookkeeping shared by a process' loops: one `error` event per
outage, not one per failed call, and a back-off that grows while it lasts,
with jitter so that the processes of a queue do not all retry at the same
moments after a Redis restart."""

from __future__ import annotations

import logging

from redis.backoff import EqualJitterBackoff
from redis.exceptions import ResponseError

from . import config
from .errors import BrokerError

log = logging.getLogger(__name__)


class Health:
    """Whether Redis is down for one process, as its loops (fetcher,
    committer) see it: `trouble` after a failed call says how long to wait
    before the next try, `ok` after a call that worked ends the outage.

    Each wait is drawn from [d/2, d], d doubling from the first to the
    longest of `config.RECONNECT_BACKOFF`: redis-py's EqualJitterBackoff,
    the draw the contract gives job retries. (Its
    ExponentialWithJitterBackoff caps after the draw, so once an outage
    lasts a few seconds nearly every wait is the cap again: lockstep.)"""

    def __init__(self, emit, on_recover=None) -> None:
        self._emit = emit
        self._on_recover = on_recover  # run in a greenlet of its own when Redis is back
        # The loops (by name) whose last call failed: an outage starts when
        # the first one fails and ends when the last one works again, so
        # several loops (one fetcher per queue partition) give one event.
        self._failing: set = set()
        first, longest = config.RECONNECT_BACKOFF
        self._backoff = EqualJitterBackoff(cap=longest, base=first)
        self._failures = 0  # in a row, since the last call that worked

    @property
    def down(self) -> bool:
        return bool(self._failing)

    def trouble(self, exc: BaseException, loop: object = None,
                also: tuple = ()) -> float:
        """Note a failed Redis call of `loop` (made for the loops `also` as
        well); returns how long to wait before retrying."""
        was_down = self.down
        self._failing.add(loop)
        self._failing.update(also)
        if not was_down:
            what = "refused" if isinstance(exc, ResponseError) else "unreachable"
            error = BrokerError(f"Redis {what}, retrying with back-off: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._emit("error", error)
        wait = self._backoff.compute(self._failures)
        # Bounded: past the cap the count no longer matters, and 2**n must stay a float.
        self._failures = min(self._failures + 1, 32)
        return wait

    def ok(self, loop: object = None) -> None:
        """Note a call of `loop` that worked. The outage (and the back-off's
        growth) ends with the last failing loop: a loop on a node that never
        failed must not reset the back-off of one whose node is down."""
        if loop not in self._failing:
            return
        self._failing.discard(loop)
        if self._failing:
            return
        self._failures = 0
        log.warning("Redis reachable again")
        if self._on_recover is not None:
            import gevent

            gevent.spawn(self._on_recover)
