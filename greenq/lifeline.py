"""A native thread that keeps a worker process' heartbeat going while the
gevent hub is blocked, reports the blocking, and enforces the time limits
the hub cannot.

Heartbeats normally ride on the committer's tick, a greenlet. A task in a
CPU loop or in a blocking call gevent did not patch stops every greenlet of
the process: without this thread all its running jobs would turn stale and
run again elsewhere while they still run here. The thread is a fallback: it
sends nothing while the hub keeps its pulse.

A job past its task's `time_limit` while the hub is blocked cannot be
interrupted (gevent only switches where the job yields). In a child process
the thread then ends the process, and the master replaces it; its jobs come
back through the stale flush. Embedded (no child processes) it stops
heartbeating instead, so other processes reclaim the jobs after their
timeout, and leaves the program alone.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback

import gevent
from gevent import monkey

from .broker import Broker

log = logging.getLogger(__name__)

# The real ones, whatever monkey-patching did: this must be an OS thread.
_start_thread = monkey.get_original("_thread", "start_new_thread")
_sleep = monkey.get_original("time", "sleep")

STUCK_EXIT_STATUS = 70  # a child that ended itself: a job overran its time limit on a blocked hub
REPORT_EVERY = 30.0     # seconds between reports while the hub stays blocked


class Lifeline:
    def __init__(self, broker: Broker, process_id: str, interval: float,
                 deadlines: dict[str, float], exit_when_stuck: bool) -> None:
        self.broker = broker
        self.process_id = process_id
        self.interval = interval
        self.deadlines = deadlines  # job id -> time.monotonic() when its time limit runs out
        self.exit_when_stuck = exit_when_stuck
        self.pulse = time.monotonic()
        self._stopping = False
        self._pulse_greenlet = None
        self._hub_thread: int | None = None  # the thread running the gevent hub, set by start()

    def start(self) -> None:
        self._hub_thread = threading.get_ident()
        self._pulse_greenlet = gevent.spawn(self._keep_pulse)
        _start_thread(self._watch, ())

    def stop(self) -> None:
        self._stopping = True
        if self._pulse_greenlet is not None:
            self._pulse_greenlet.kill()

    def _keep_pulse(self) -> None:
        while True:
            self.pulse = time.monotonic()
            gevent.sleep(self.interval / 4)

    # -- the thread ----------------------------------------------------------

    def _watch(self) -> None:
        client = None
        blocked_since = None
        reported_at = last_beat = 0.0
        abandoned = False
        while not self._stopping:
            _sleep(self.interval / 2)
            if self._stopping:
                return
            now = time.monotonic()
            if now - self.pulse < self.interval:
                if blocked_since is not None:
                    log.warning("gevent hub running again after %.1f s blocked", now - blocked_since)
                    blocked_since, abandoned = None, False
                continue
            if blocked_since is None:
                blocked_since = self.pulse
            if now - reported_at >= REPORT_EVERY:
                reported_at = now
                log.warning("gevent hub blocked for %.1f s: a task is computing or in a call "
                            "gevent does not patch; heartbeats go on from a thread. Blocked in:\n%s",
                            now - blocked_since, self._hub_stack())
            overdue = [job_id for job_id, deadline in list(self.deadlines.items())
                       if now > deadline + self.interval]
            if overdue and not abandoned:
                abandoned = True
                self._stuck(overdue)
            if abandoned or now - last_beat < self.interval:
                continue
            try:
                client = client or self.broker.channel(1)
                self.broker.heartbeat(self.process_id, client)
                last_beat = now
            except Exception as exc:  # Redis trouble: the next round tries again
                log.warning("heartbeat from the lifeline thread failed: %r", exc)
                client = None

    def _stuck(self, job_ids: list[str]) -> None:
        jobs = ", ".join(job_ids[:10])
        if self.exit_when_stuck:
            log.critical("job(s) %s ran past their time limit on a blocked gevent hub; ending this "
                         "worker process so the master replaces it (its jobs come back through "
                         "the stale flush). Blocked in:\n%s", jobs, self._hub_stack())
            logging.shutdown()
            os._exit(STUCK_EXIT_STATUS)
        log.error("job(s) %s ran past their time limit on a blocked gevent hub; this process "
                  "stops heartbeating so the jobs are reclaimed after their timeout", jobs)

    def _hub_stack(self) -> str:
        frame = sys._current_frames().get(self._hub_thread)
        if frame is None:
            return "  (no stack)"
        return "".join(traceback.format_stack(frame, limit=8))
