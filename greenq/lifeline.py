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
timeout, and leaves the program alone. Either way it first leaves a note in
Redis on each overdue job (note.lua), so the flush records a
TimeLimitExceeded text naming the limit rather than "no heartbeat".
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from typing import NamedTuple

import gevent
import redis
from gevent import monkey

from .broker import Broker
from .job import Job

log = logging.getLogger(__name__)

# The real ones, whatever monkey-patching did: this must be an OS thread.
_start_thread = monkey.get_original("_thread", "start_new_thread")
_sleep = monkey.get_original("time", "sleep")
# The OS thread's id, which sys._current_frames() is keyed by (patched, the
# threading module's get_ident answers the running greenlet's id).
_thread_id = monkey.get_original("_thread", "get_ident")

STUCK_EXIT_STATUS = 70  # a child that ended itself: a job overran its time limit on a blocked hub
REPORT_EVERY = 30.0     # seconds between reports while the hub stays blocked


class Deadline(NamedTuple):
    """A running job's time limit, as the lifeline thread watches it."""

    at: float     # time.monotonic() when the limit runs out
    job: Job
    limit: float  # the task's time_limit, seconds


class Lifeline:
    """The watch thread of one worker process (see the module doc): started
    and stopped with the worker, reading the jobs' deadlines the worker keeps
    in `deadlines` (job id -> Deadline)."""

    def __init__(self, broker: Broker | list[Broker], process_id: str, interval: float,
                 deadlines: dict[str, Deadline], exit_when_stuck: bool) -> None:
        # One broker per queue partition: the heartbeat goes to each.
        self.brokers = list(broker) if isinstance(broker, list) else [broker]
        self.broker = self.brokers[0]
        self.process_id = process_id
        self.interval = interval
        self.deadlines = deadlines
        self.exit_when_stuck = exit_when_stuck
        self.pulse = time.monotonic()
        self._stopping = False
        self._pulse_greenlet = None
        self._hub_thread: int | None = None  # the thread running the gevent hub, set by start()

    def start(self) -> None:
        self._hub_thread = _thread_id()
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

    @staticmethod
    def _client(clients: dict, broker: Broker) -> redis.Redis:
        """The thread's own connection to the node serving `broker`'s partition."""
        address = broker.address
        if address not in clients:
            clients[address] = broker.channel(1)
        return clients[address]

    @staticmethod
    def _close(clients: dict | None) -> None:
        for client in (clients or {}).values():
            try:
                client.connection_pool.disconnect()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def _watch(self) -> None:
        clients: dict | None = None
        blocked_since = None
        reported_at, last_beat = float("-inf"), 0.0
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
            overdue = [deadline for deadline in list(self.deadlines.values())
                       if now > deadline.at + self.interval]
            if overdue and not abandoned:
                abandoned = True
                clients = self._stuck(overdue, clients)
            if abandoned or now - last_beat < self.interval:
                continue
            clients = clients or {}
            failed = False
            for broker in self.brokers:
                try:  # one partition's node gone must not cost the others their heartbeat
                    broker.heartbeat(self.process_id, self._client(clients, broker))
                except Exception as exc:  # Redis trouble: the next round tries again
                    log.warning("heartbeat from the lifeline thread failed: %r", exc)
                    failed = True
            if failed:
                self._close(clients)
                clients = None
            else:
                last_beat = now

    def _stuck(self, overdue: list[Deadline], clients: dict | None) -> dict | None:
        """Note each overdue job's reason in Redis, then end the process (a
        child) or stop heartbeating (embedded). Returns the clients to go on with."""
        jobs = ", ".join(deadline.job.id for deadline in overdue[:10])
        stack = self._hub_stack()
        then = ("its worker process ended itself" if self.exit_when_stuck else
                "its process stopped heartbeating so that another one reclaims it")
        notes: dict[int, list] = {}
        for deadline in overdue:
            job = deadline.job
            notes.setdefault(job.partition, []).extend([job.id, job.token,
                      f"TimeLimitExceeded: job {job.id} ({job.task_id}) ran longer than its time "
                      f"limit of {deadline.limit:g} s on a blocked gevent hub, where it cannot be "
                      f"interrupted; {then}. It was running:\n{stack}"])
        try:
            clients = clients or {}
            for partition, groups in notes.items():
                broker = self.brokers[partition]
                broker.note(self.process_id, groups, self._client(clients, broker))
        except Exception as exc:  # the flush then says "no heartbeat"
            log.warning("could not note the time limit on the jobs in Redis: %r", exc)
            self._close(clients)
            clients = None
        if self.exit_when_stuck:
            log.critical("job(s) %s ran past their time limit on a blocked gevent hub; ending this "
                         "worker process so the master replaces it (its jobs come back through "
                         "the stale flush). Blocked in:\n%s", jobs, stack)
            logging.shutdown()
            os._exit(STUCK_EXIT_STATUS)
        log.error("job(s) %s ran past their time limit on a blocked gevent hub; this process "
                  "stops heartbeating so the jobs are reclaimed after their timeout", jobs)
        return clients

    def _hub_stack(self) -> str:
        frame = sys._current_frames().get(self._hub_thread)
        if frame is None:
            return "  (no stack)"
        return "".join(traceback.format_stack(frame, limit=8))
