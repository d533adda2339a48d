"""Keeps a worker process' own loops (the fetcher, the committer) alive.

An unexpected exception in one of them (a bug: Redis trouble is handled
inside the loops) would end its greenlet with nothing but gevent's print
to stderr: a process that heartbeats but never fetches, or one that runs
jobs without heartbeating them, so they run elsewhere too. Here it is
logged with its traceback, reported as an `error` event, and the loop
starts again after a pause that grows while it keeps crashing.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import gevent

from . import config
from .errors import LoopCrashedError

log = logging.getLogger(__name__)

STEADY = 60.0  # seconds a loop must run before its restart pause starts small again


def supervise(name: str, loop: Callable[[], None], emit: Callable,
              after_crash: Callable[[], bool]) -> gevent.Greenlet:
    """Run `loop` in a new greenlet until it returns (or the greenlet is
    killed). After a crash `after_crash()` repairs what the loop left
    half-done and says whether to start it again."""
    return gevent.spawn(_run, name, loop, emit, after_crash)


def _run(name: str, loop: Callable[[], None], emit: Callable,
         after_crash: Callable[[], bool]) -> None:
    pause = config.RECONNECT_BACKOFF[0]
    while True:
        started = time.monotonic()
        try:
            loop()
            return
        except Exception as exc:
            if time.monotonic() - started > STEADY:
                pause = config.RECONNECT_BACKOFF[0]
            again = after_crash()
            log.error("the %s loop crashed%s", name,
                      f"; it starts again in {pause:.2f} s" if again else "", exc_info=True)
            error = LoopCrashedError(
                f"the {name} loop crashed ({type(exc).__name__}: {exc})"
                + ("; it starts again" if again else ""))
            error.__cause__ = exc
            emit("error", error)
            if not again:
                return
        gevent.sleep(pause)
        pause = min(pause * 2, config.RECONNECT_BACKOFF[1])
