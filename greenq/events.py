"""Event registration and delivery. Handlers run one at a time, in order; one
that raises is logged and the queue goes on."""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)

EVENTS = ("job_success", "job_fail", "job_retry", "job_cancel", "error", "child_restart")


class EventBus:
    """Before `start()` (a process that only submits) handlers run at once in
    the caller; after it, a greenlet delivers them, so a slow handler never
    holds up a Redis round trip."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Callable[[Any], Any]]] = {name: [] for name in EVENTS}
        self._queue = None
        self._greenlet = None

    def on(self, event: str, handler: Callable[[Any], Any]) -> None:
        if event not in self._handlers:
            raise ValueError(f"unknown event {event!r}; events are {', '.join(EVENTS)}")
        if not callable(handler):
            raise TypeError("an event handler must be callable")
        self._handlers[event].append(handler)

    def wants(self, event: str) -> bool:
        return bool(self._handlers[event])

    def emit(self, event: str, payload: Any) -> None:
        if event == "error":
            log.warning("greenq error: %s", payload)
        if not self._handlers[event]:
            return
        if self._queue is not None:
            self._queue.put((event, payload))
        else:
            self.deliver(event, payload)

    def deliver(self, event: str, payload: Any) -> None:
        for handler in self._handlers[event]:
            try:
                handler(payload)
            except BaseException:
                # Even SystemExit or GreenletExit from a handler must not end
                # delivery for every later event (or the program).
                log.exception("%s handler %r raised; ignored", event, handler)

    def start(self) -> None:
        import gevent
        import gevent.queue

        self._queue = gevent.queue.Queue()
        self._greenlet = gevent.spawn(self._deliver_forever)

    def _deliver_forever(self) -> None:
        for event, payload in self._queue:
            self.deliver(event, payload)

    def stop(self) -> None:
        """Deliver what is queued, then return to delivering in the caller.
        (gevent's Queue ends its iteration at a StopIteration item.)"""
        if self._queue is None:
            return
        self._queue.put(StopIteration)
        self._greenlet.join()
        self._queue = None
