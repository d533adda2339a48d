"""Redis outage bookkeeping shared by a process' loops: one `error` event per
outage, not one per failed call, and a back-off that grows while it lasts."""

from __future__ import annotations

import logging

from redis.exceptions import ResponseError

from . import config
from .errors import BrokerError

log = logging.getLogger(__name__)


class Health:
    def __init__(self, emit, on_recover=None) -> None:
        self._emit = emit
        self._on_recover = on_recover  # run in a greenlet of its own when Redis is back
        self.down = False
        self._backoff = config.RECONNECT_BACKOFF[0]

    def trouble(self, exc: BaseException) -> float:
        """Note a failed Redis call; returns how long to wait before retrying."""
        if not self.down:
            self.down = True
            what = "refused" if isinstance(exc, ResponseError) else "unreachable"
            error = BrokerError(f"Redis {what}, retrying with back-off: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._emit("error", error)
        wait = self._backoff
        self._backoff = min(self._backoff * 2, config.RECONNECT_BACKOFF[1])
        return wait

    def ok(self) -> None:
        if self.down:
            self.down = False
            log.warning("Redis reachable again")
            if self._on_recover is not None:
                import gevent

                gevent.spawn(self._on_recover)
        self._backoff = config.RECONNECT_BACKOFF[0]
