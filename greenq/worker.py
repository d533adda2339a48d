"""Fetch -> greenlet pool -> run -> hand the outcome to the committer.

One fetching greenlet per process leases as many jobs as there are free
slots in one round trip, and blocks in Redis (BLMOVE, the fetch pipelined
behind it) when there are none, so an idle worker starts a new job one
round trip after its submit, and each job submitted wakes one idle process,
not all of them.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Callable

import gevent
import gevent.event
import gevent.pool

from . import config
from .broker import REDIS_TROUBLE, Broker
from .committer import Committer
from .errors import (BrokerError, JobDecodeError, TimeLimitExceeded, UnknownTaskError,
                     WorkerShutdown)
from .health import Health
from .job import ROW, Job, decode_row
from .lifeline import Deadline, Lifeline
from .registry import Registry, Task

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, broker: Broker, registry: Registry, process_id: str,
                 worker_count: int, health: Health, emit: Callable,
                 max_params_bytes: int, flush_stale_timeout: float | None = None,
                 exit_when_stuck: bool = False) -> None:
        self.broker = broker
        self.registry = registry
        self.process_id = process_id
        self.worker_count = worker_count
        self.health = health
        self.emit = emit
        self.max_params_bytes = max_params_bytes
        self.pool = gevent.pool.Pool(worker_count)
        self.running: dict[str, tuple[Job, gevent.Greenlet]] = {}
        timeouts = [t.timeout for t in registry.tasks.values()] or [config.DEFAULT_TASK_TIMEOUT]
        tick = max(0.05, min(config.MAX_TICK_INTERVAL, min(timeouts) / 4))
        self.committer = Committer(broker, process_id, tick, health, emit, max_params_bytes,
                                   flush_stale_timeout)
        self._timeouts = registry.timeouts_ms()
        self.deadlines: dict[str, Deadline] = {}  # job id -> when its time limit runs out
        self.lifeline = Lifeline(broker, process_id, tick, self.deadlines, exit_when_stuck)
        self._stopping = False
        self._hurry = gevent.event.Event()
        # True while the fetcher waits (for a free slot, or in BLMOVE) holding
        # no lease, so stop() may kill it instead of waiting out the wait.
        self._parked = False
        self._orphans_possible = False
        self._fetcher = None
        # Block in Redis well within the socket timeout, or an idle wait
        # would read as a broken connection.
        socket_timeout = broker.socket_timeout or config.SOCKET_TIMEOUT
        self._block_seconds = min(config.FETCH_BLOCK_SECONDS, socket_timeout / 2)
        self._client = None
        self.started = 0

    def start(self) -> None:
        self._client = self.broker.script_channel()
        # One call on the queue's keys now, so missing rights (an ACL user
        # limited to other keys) fail start() instead of idling later.
        self.broker.heartbeat(self.process_id, self._client)
        self.committer.start()
        self.lifeline.start()
        self._fetcher = gevent.spawn(self._fetch_loop)

    # -- fetching ------------------------------------------------------------

    def _fetch_loop(self) -> None:
        default_ms = int(config.DEFAULT_TASK_TIMEOUT * 1000)
        queue_was_empty = False
        while not self._stopping:
            free = min(self.pool.free_count(), config.SCRIPT_BATCH)
            if free == 0:
                self._parked = True
                try:
                    self.pool.wait_available(timeout=config.FETCH_BLOCK_SECONDS)
                finally:
                    self._parked = False
                continue
            try:
                if self._orphans_possible:
                    self._give_back_orphans()
                if queue_was_empty:
                    # Parked in Redis' wait; stop() may kill us here and
                    # then gives back what the pipelined fetch leased.
                    self._parked = True
                    try:
                        rows, problems = self.broker.wait_and_fetch(
                            self._client, self._block_seconds, self.process_id, free,
                            default_ms, self._timeouts)
                    finally:
                        self._parked = False
                else:
                    rows, problems = self.broker.fetch(
                        self._client, self.process_id, free, default_ms, self._timeouts)
            except REDIS_TROUBLE as exc:
                # The script may have leased jobs whose reply we lost.
                self._orphans_possible = True
                gevent.sleep(self.health.trouble(exc))
                continue
            self.health.ok()
            for problem in problems:
                self.emit("error", BrokerError(problem.decode("utf-8", "replace")))
            # Fewer than asked for: the queue ran dry, so the next call waits
            # (a BLMOVE returns at once if jobs arrived meanwhile) instead of
            # a fetch that would likely find nothing and cost a round trip.
            queue_was_empty = len(rows) < free * ROW
            for start in range(0, len(rows), ROW):
                self._start_job(rows[start:start + ROW])
            if rows:
                # Let the jobs just spawned start before the next fetch is
                # packed and sent: a woken idle worker starts its job sooner.
                gevent.sleep(0)

    def _give_back_orphans(self) -> None:
        """Jobs Redis says we hold but we do not run: leased by a fetch whose
        reply was lost. Give them back untouched."""
        busy = set(self.running) | self.committer.unsettled
        orphans = [x for job_id, token in self.broker.owned(self.process_id)
                   if job_id not in busy for x in (job_id, token)]
        if orphans:
            log.warning("giving back %d jobs leased by a fetch whose reply was lost", len(orphans) // 2)
            self.broker.give_back(self.process_id, orphans, self._client)
        self._orphans_possible = False

    def _start_job(self, row: list) -> None:
        try:
            job = decode_row(row, self.max_params_bytes)
        except JobDecodeError as exc:
            job = exc.job
            self.emit("error", JobDecodeError(f"job {job.id}: {exc}"))
            self.committer.failed(job, f"JobDecodeError: {exc}", final=True)
            return
        task = self.registry.get(job.task_id)
        if task is None:
            error = UnknownTaskError(
                f"job {job.id} names task {job.task_id!r}, which this process has not registered"
                f" (registered: {', '.join(sorted(self.registry.tasks)) or 'none'})")
            self.emit("error", error)
            self.committer.failed(job, f"UnknownTaskError: {error}", final=True)
            return
        self.started += 1
        greenlet = self.pool.spawn(self._run, job, task)
        self.running[job.id] = (job, greenlet)

    # -- running -------------------------------------------------------------

    def _run(self, job: Job, task: Task) -> None:
        limit = None
        if task.time_limit is not None:
            self.deadlines[job.id] = Deadline(time.monotonic() + task.time_limit, job,
                                              task.time_limit)
            # Fires where the job yields; a job that never yields is the
            # lifeline thread's business.
            limit = gevent.Timeout(task.time_limit, TimeLimitExceeded(
                f"job {job.id} ({job.task_id}) ran longer than its time limit of {task.time_limit:g} s"))
            limit.start()
        try:
            task.perform(job.params)
        except WorkerShutdown:
            self.committer.give_back(job)
        except BaseException:  # SystemExit, KeyboardInterrupt, GreenletExit too: a failed job
            self.committer.failed(job, traceback.format_exc())
        else:
            job.error = None
            self.committer.succeeded(job)
        finally:
            if limit is not None:
                limit.close()
                self.deadlines.pop(job.id, None)
            self.running.pop(job.id, None)

    # -- stopping ------------------------------------------------------------

    def hurry(self) -> None:
        """Cut a graceful stop short: running jobs go back to the queue now."""
        self._hurry.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop fetching, let running jobs finish (up to `timeout`, then give
        them back), commit every outcome, then close the connections."""
        self._stopping = True
        if self._fetcher is not None:
            if self._parked:
                # Only a wait is lost, unless the fetch pipelined behind it
                # had just leased jobs: those are given back below. redis-py
                # closes a connection whose read was interrupted, which ends
                # the wait in Redis too: no job arriving while running jobs
                # finish is leased to us.
                self._fetcher.kill()
                self._orphans_possible = True
            self._fetcher.join()
            if self._orphans_possible:
                try:
                    self._give_back_orphans()
                except REDIS_TROUBLE as exc:
                    log.warning("could not give back jobs leased at shutdown; the stale "
                                "flush will: %r", exc)
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = gevent.spawn(self.pool.join)
        gevent.wait([waiter, self._hurry], timeout=timeout, count=1)
        waiter.kill()
        if self.running:
            log.warning("shutdown timeout: giving %d running jobs back to the queue", len(self.running))
            for _job, greenlet in list(self.running.values()):
                greenlet.kill(WorkerShutdown, block=False)
            self.pool.join(timeout=max(1.0, (deadline or 0) - time.monotonic()))
        self.committer.stop()
        self.lifeline.stop()
        if self._client is not None:
            self._client.disconnect()
