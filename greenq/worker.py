"""Fetch -> runner greenlets -> run -> hand the outcome to the committer.

One fetching greenlet per queue partition (one for a queue of one) leases
as many jobs as there are free slots in one round trip, and blocks in Redis
(BLMOVE, the fetch pipelined behind it) when there are none, so an idle
worker starts a new job one round trip after its submit, and each job
submitted wakes one idle process, not all of them. An idle process waits on
every partition at once, one connection each.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
from typing import Any, Callable

import gevent
import gevent.event
import gevent.lock

from . import config, joblog, tracing
from .broker import REDIS_TROUBLE, Broker
from .committer import Committer
from .current import running_job
from .errors import (BrokerError, JobCancelled, JobDecodeError, TimeLimitExceeded,
                     UnknownTaskError, WorkerShutdown)
from .health import Health
from .job import FETCH_ROW, Job, decode_row
from .lifeline import Deadline, Lifeline
from .registry import Registry, Task
from .runners import Runners
from .serializers import Serializer, get_serializer
from .supervisor import supervise

log = logging.getLogger(__name__)

# stop(timeout=T) returns within T + this many seconds, Redis answering or
# not: time for the jobs given back at T to unwind, and for the round trips
# that record them, the last heartbeat and the last ownership check.
SHUTDOWN_MARGIN = 1.0
# How a stop names jobs Redis leased to this process after its fetcher was
# stopped: Redis learns of a closed connection only when the close reaches
# it, and may serve that connection's wait before (a proxy, a slow network).
LEASED_AFTER_STOP = ("after this process stopped fetching (Redis served the wait of "
                     "the fetcher it had stopped)")


class Lane:
    """The fetching of one queue partition: its broker, connection and
    fetcher greenlet, and what a stop must know about them."""

    __slots__ = ("broker", "index", "client", "fetcher", "parked", "maybe_orphans", "alarm",
                 "alarm_at", "reserved", "has_turn")

    def __init__(self, broker: Broker, index: int) -> None:
        self.broker = broker
        self.index = index
        self.client: Any = None
        self.fetcher: Any = None
        # Not None while the fetcher waits (for a free slot, in BLMOVE, in a
        # back-off) holding no lease, so stop() may kill it instead of
        # waiting out the wait; then how a kill there may leave jobs leased
        # to us that we do not run ("" none).
        self.parked: str | None = None
        # None, or how jobs this process does not run may have been leased to it.
        self.maybe_orphans: str | None = None
        # Wakes an idle worker when the next delayed job is due (see
        # Worker._wake_for_due); with the monotonic time it is set for.
        self.alarm: Any = None
        self.alarm_at = 0.0
        self.reserved = 0  # runner slots its fetch in flight may fill
        self.has_turn = False  # holds Worker._fetch_turn


def _left(deadline: float | None) -> float | None:
    """Seconds until `deadline` (time.monotonic()), never negative; None: no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class Worker:
    """Runs jobs in this process: one fetcher greenlet leases jobs for up to
    `worker_count` runner greenlets (greenq/runners.py), each job's outcome
    goes to the committer, and `stop()` winds it all down without losing a job."""

    def __init__(self, broker: Broker | list[Broker], registry: Registry, process_id: str,
                 worker_count: int, health: Health, emit: Callable,
                 max_params_bytes: int, flush_stale_timeout: float | None = None,
                 exit_when_stuck: bool = False, unknown_task_grace: float = 0.0,
                 about: dict[str, Any] | None = None,
                 serializer: Serializer | None = None, queue_id: str = "") -> None:
        # One broker per queue partition; the first stands for the queue
        # where one will do.
        self.brokers = list(broker) if isinstance(broker, list) else [broker]
        self.broker = self.brokers[0]
        self.registry = registry
        self.queue_id = queue_id  # what spans name as the destination (greenq/tracing.py)
        self.process_id = process_id
        self.worker_count = worker_count
        self.health = health
        self.emit = emit
        self.max_params_bytes = max_params_bytes
        # perform's return values are stored with the submitters' checks.
        self.serializer = serializer or get_serializer("msgpack")
        self.runners = Runners(worker_count, self._run)
        self.running: dict[str, Job] = {}
        timeouts = [t.timeout for t in registry.tasks.values()] or [config.DEFAULT_TASK_TIMEOUT]
        tick = max(0.05, min(config.MAX_TICK_INTERVAL, min(timeouts) / 4))
        self.committer = Committer(self.brokers, process_id, tick, health, emit, max_params_bytes,
                                   flush_stale_timeout, unknown_task_grace,
                                   on_cancel=self._cancel_running)
        self.committer.task_of = registry.get  # a retry waits out its task's back-off
        # Running jobs a cancel reached and that got JobCancelled:
        # the heartbeat lists them until they finish, the kill happens once.
        self._cancelled: set[str] = set()
        # A job of a task not registered here waits this long for a worker
        # that has it (0: it fails at once); warned about once per task.
        self.unknown_task_grace = unknown_task_grace
        self._unknown_tasks: set[str] = set()
        self._timeouts = registry.timeouts_ms()
        self._rate_limits = registry.rate_limits()
        self._lanes = [Lane(b, index) for index, b in enumerate(self.brokers)]
        # A fetch returned: fetchers waiting for the slots it held look again.
        self._slots_changed = gevent.event.Event()
        self._fetch_turn = gevent.lock.Semaphore(1)  # see _take_fetch_turn
        self.deadlines: dict[str, Deadline] = {}  # job id -> when its time limit runs out
        self.lifeline = Lifeline(self.brokers, process_id, tick, self.deadlines, exit_when_stuck)
        self._stopping = False
        self._hurry = gevent.event.Event()
        # Block in Redis well within the socket timeout, or an idle wait
        # would read as a broken connection.
        socket_timeout = self.broker.socket_timeout or config.SOCKET_TIMEOUT
        self._block_seconds = min(config.FETCH_BLOCK_SECONDS, socket_timeout / 2)
        self.started = 0
        # What the registry of live workers says this process is: {"role":
        # "worker"} in-process, or a master's child with its index and master pid.
        self.about = about or {"role": "worker"}

    @property
    def _fetcher(self) -> Any:
        """The first partition's fetcher greenlet (all of them: _lanes)."""
        return self._lanes[0].fetcher

    def start(self) -> None:
        now_ms = 0
        for lane in self._lanes:
            lane.client = lane.broker.script_channel()
            # One call on the queue's keys now, so missing rights (an ACL user
            # limited to other keys) fail start() instead of idling later.
            _held, now_ms, _cancels = lane.broker.heartbeat(self.process_id, lane.client)
        # The committer's first tick (at once) registers it as a live worker.
        registration = json.dumps({
            "host": socket.gethostname(), "pid": os.getpid(), **self.about,
            "capacity": self.worker_count, "started_ms": now_ms})
        for broker in self.brokers:
            broker.registration = registration
        self.committer.start()
        self.lifeline.start()
        for lane in self._lanes:
            lane.fetcher = supervise("fetch", lambda lane=lane: self._fetch_loop(lane), self.emit,
                                     lambda lane=lane: self._after_fetch_crash(lane))

    def _free_slots(self, lane: Lane, waiting: bool) -> int:
        """How many jobs `lane`'s next fetch may lease: the free runner slots
        less what other partitions' fetches in flight may fill; a wait asks
        for its share only, since every idle partition waits at once."""
        free = self.runners.free_count() - sum(other.reserved for other in self._lanes)
        if waiting and len(self._lanes) > 1:
            free = min(free, max(1, self.runners.free_count() // len(self._lanes)))
        return max(0, min(free, config.SCRIPT_BATCH))

    # -- fetching ------------------------------------------------------------

    def _fetch_loop(self, lane: Lane) -> None:
        default_ms = int(config.DEFAULT_TASK_TIMEOUT * 1000)
        broker, health_key = lane.broker, ("fetch", lane.index)
        queue_was_empty = False
        while not self._stopping:
            free = self._free_slots(lane, queue_was_empty)
            if free == 0:
                lane.parked = ""
                try:
                    if self.runners.free_count() == 0:
                        self.runners.wait_available(timeout=config.FETCH_BLOCK_SECONDS)
                    else:  # other partitions' fetches in flight may fill the free slots
                        self._slots_changed.clear()
                        self._slots_changed.wait(timeout=config.FETCH_BLOCK_SECONDS)
                finally:
                    lane.parked = None
                continue
            if not queue_was_empty and len(self._lanes) > 1 and not self._take_fetch_turn(lane):
                continue
            # A wait asks for its share only, so it reserves nothing: every
            # idle partition waits at once.
            lane.reserved = 0 if queue_was_empty else self._free_slots(lane, False)
            free = lane.reserved or free
            try:
                if lane.maybe_orphans:
                    self._give_back_orphans(lane, lane.maybe_orphans)
                if queue_was_empty:
                    # Parked in Redis' wait; stop() may kill us here and
                    # then gives back what the pipelined fetch leased.
                    lane.parked = "by the wait this stop interrupted"
                    try:
                        rows, problems, due_ms = broker.wait_and_fetch(
                            lane.client, self._block_seconds, self.process_id, free,
                            default_ms, self._timeouts, self._rate_limits, with_due=True)
                    finally:
                        lane.parked = None
                else:
                    rows, problems, due_ms = broker.fetch(
                        lane.client, self.process_id, free, default_ms, self._timeouts,
                        self._rate_limits, with_due=True)
            except REDIS_TROUBLE as exc:
                lane.reserved = 0
                self._end_fetch_turn(lane)
                # The script may have leased jobs whose reply we lost.
                lane.maybe_orphans = "by a fetch whose reply was lost"
                lane.parked = ""  # a stop need not wait out the back-off
                try:
                    gevent.sleep(self.health.trouble(exc, health_key))
                finally:
                    lane.parked = None
                continue
            self.health.ok(health_key)
            for problem in problems:
                self.emit("error", BrokerError(problem.decode("utf-8", "replace")))
            # Fewer than asked for: the queue ran dry, so the next call waits
            # (a BLMOVE returns at once if jobs arrived meanwhile) instead of
            # a fetch that would likely find nothing and cost a round trip.
            queue_was_empty = len(rows) < free * FETCH_ROW
            if queue_was_empty:
                self._wake_for_due(lane, due_ms)
            if rows and joblog.enabled(joblog.DEBUG):  # once per batch: free when off
                joblog.started(rows)
            for start in range(0, len(rows), FETCH_ROW):
                self._start_job(rows[start:start + FETCH_ROW], lane.index)
            lane.reserved = 0
            self._end_fetch_turn(lane)
            self._slots_changed.set()
            if rows:
                # Let the jobs just spawned start before the next fetch is
                # packed and sent: a woken idle worker starts its job sooner.
                gevent.sleep(0)

    def _take_fetch_turn(self, lane: Lane) -> bool:
        """With several partitions, one fetch that is not a wait at a time:
        slots freed while it is in flight then go to the next fetch whole,
        as with one partition, instead of to several small fetches at once.
        False: no slot left once it was this lane's turn."""
        lane.parked = ""
        try:
            self._fetch_turn.acquire()
        finally:
            lane.parked = None
        lane.has_turn = True
        if self._stopping or self._free_slots(lane, False) == 0:
            self._end_fetch_turn(lane)
            return False
        return True

    def _end_fetch_turn(self, lane: Lane) -> None:
        if lane.has_turn:
            lane.has_turn = False
            self._fetch_turn.release()

    def _wake_for_due(self, lane: Lane, due_ms: int) -> None:
        """Going idle with a delayed job due in `due_ms` (-1: none): be woken
        then. Redis ends a blocking wait only on its own cron (every 100 ms
        at its default hz), too coarse for a due time, so a timer here calls
        wake.lua at that time, which wakes a blocked worker of any process.
        Beyond one wait's length the next fetch tells again."""
        if due_ms < 0 or due_ms > self._block_seconds * 1000:
            return
        at = time.monotonic() + due_ms / 1000
        if lane.alarm is not None and not lane.alarm.dead and lane.alarm_at <= at:
            return  # an earlier alarm is set already
        if lane.alarm is not None:
            lane.alarm.kill(block=False)
        lane.alarm_at = at
        lane.alarm = gevent.spawn_later(due_ms / 1000, self._wake, lane)

    def _wake(self, lane: Lane) -> None:
        # This alarm has fired: the fetch it wakes may answer before wake.lua
        # does, and its _wake_for_due must set the next alarm, not take this
        # running one for an earlier alarm still to come.
        lane.alarm = None
        try:
            due_ms = lane.broker.wake()
        except REDIS_TROUBLE:  # the fetch loop reports the outage; its next wait ends anyway
            return
        if due_ms > 0 and not self._stopping:  # Redis' clock is behind ours: not due yet there
            self._wake_for_due(lane, due_ms)

    def _after_fetch_crash(self, lane: Lane) -> bool:
        # Rows of the crashed round may be leased but not started.
        lane.maybe_orphans = "by the fetch loop before it crashed"
        lane.reserved = 0
        self._end_fetch_turn(lane)
        return not self._stopping

    def _give_back_orphans(self, lane: Lane, how: str) -> None:
        """Jobs Redis says we hold in `lane`'s partition but we do not run
        (leased `how`: by a fetch whose reply was lost, ...). Give them back
        untouched."""
        busy = set(self.running) | self.committer.unsettled
        orphans = [x for job_id, token in lane.broker.owned(self.process_id)
                   if job_id not in busy for x in (job_id, token)]
        if orphans:
            count = len(orphans) // 2
            log.warning("giving back %d %s leased %s", count, "job" if count == 1 else "jobs", how)
            lane.broker.give_back(self.process_id, orphans, lane.client)
        lane.maybe_orphans = None

    def _start_job(self, row: list, partition: int = 0) -> None:
        try:
            job = decode_row(row, self.max_params_bytes)
        except JobDecodeError as exc:
            job = exc.job
            job.partition = partition
            if self._give_back_unknown(job):
                return  # the workers of its task may read what this one cannot
            self.emit("error", JobDecodeError(f"job {job.id}: {exc}"))
            self.committer.failed(job, f"JobDecodeError: {exc}", final=True)
            return
        job.partition = partition
        task = self.registry.get(job.task_id)
        if task is None:
            if self._give_back_unknown(job):
                return
            error = UnknownTaskError(
                f"job {job.id} names task {job.task_id!r}, which this process has not registered"
                f" (registered: {', '.join(sorted(self.registry.tasks)) or 'none'})")
            self.emit("error", error)
            self.committer.failed(job, f"UnknownTaskError: {error}", final=True)
            return
        if self.runners.full():
            # Fetches of several partitions at once leased more than there
            # are runners: back to the head of its queue, untouched, rather
            # than a fetcher blocked holding a leased job.
            self.committer.give_back(job)
            return
        self.started += 1
        self.running[job.id] = job
        self.runners.start(job, task)

    def _give_back_unknown(self, job: Job) -> bool:
        """A job of a task this process has not registered (a rolling deploy:
        a newer worker's task): give it back for a worker that has, with a
        back-off; it fails once unknown_task_grace is over. False when it
        fails at once: no grace, or no task id at all (a malformed record)."""
        grace = self.unknown_task_grace
        if not grace or not job.task_id or self.registry.get(job.task_id) is not None:
            return False
        if job.task_id not in self._unknown_tasks and len(self._unknown_tasks) < 100:
            self._unknown_tasks.add(job.task_id)
            log.warning("jobs of task %r, which this process has not registered, go back to the "
                        "queue for a worker that has; without one they fail after "
                        "unknown_task_grace (%g s)", job.task_id, grace, extra={"task": job.task_id})
        registered = ", ".join(sorted(self.registry.tasks)) or "none"
        self.committer.give_back_unknown(job, (
            f"job {job.id} names task {job.task_id!r}, and no worker that registered it took "
            f"the job within unknown_task_grace ({grace:g} s); the last worker to fetch it "
            f"registered: {registered}"))
        return True

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
        began = time.monotonic()
        context = running_job.set(job)
        try:
            if tracing.enabled:
                result = tracing.perform(task.perform, job, self.queue_id)
            else:
                result = task.perform(job.params)
        except WorkerShutdown:
            job.duration = time.monotonic() - began
            self.committer.give_back(job)
        except JobCancelled:
            job.duration = time.monotonic() - began
            self.committer.cancelled(job)
        except BaseException:  # SystemExit, KeyboardInterrupt, GreenletExit too: a failed job
            job.duration = time.monotonic() - began
            self.committer.failed(job, traceback.format_exc())
        else:
            job.duration = time.monotonic() - began
            self._succeeded(job, result)
        finally:
            running_job.reset(context)
            if limit is not None:
                limit.close()
                self.deadlines.pop(job.id, None)
            self.running.pop(job.id, None)
            self._cancelled.discard(job.id)

    def _succeeded(self, job: Job, result: Any) -> None:
        """Hand a returned job to the committer, its result encoded as params
        are; a result the serializer cannot carry, or over the size cap,
        fails the job instead (with retries, as perform raising would)."""
        blob = b""
        if result is not None:
            try:
                blob = self.serializer.encode(result, self.max_params_bytes, "result")
            except Exception as exc:  # ParamsError, or an encoder's own complaint
                self.committer.failed(job, f"ParamsError: job {job.id} ({job.task_id}) returned a "
                                           f"result greenq cannot store: {exc}")
                return
        job.error = None
        job.result = result
        self.committer.succeeded(job, self.serializer.tag if blob else "", blob)

    def _cancel_running(self, job_ids: list[str]) -> None:
        """The heartbeat says a cancel reached these jobs: stop each (once)
        where it next yields."""
        for job_id in job_ids:
            if job_id in self.running and job_id not in self._cancelled:
                self._cancelled.add(job_id)
                self.runners.interrupt(job_id, JobCancelled(f"job {job_id} was cancelled"))

    # -- stopping ------------------------------------------------------------

    def hurry(self) -> None:
        """Cut a graceful stop short: running jobs go back to the queue now."""
        self._hurry.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop fetching, let running jobs finish (up to `timeout`, then give
        them back), commit every outcome, give back any job Redis leased to
        this process that it does not run, then close the connections.

        With a timeout (or after `hurry()`), it returns within
        SHUTDOWN_MARGIN seconds after the timeout (the hurry), even while
        Redis does not answer; what it could not write then is left to the
        stale flush (those jobs run again once their timeout passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stopping = True
        self._slots_changed.set()
        for lane in self._lanes:
            if lane.fetcher is not None:
                self._stop_fetcher(lane, deadline)
            if lane.alarm is not None:
                lane.alarm.kill(block=False)
        waiter = gevent.spawn(self.runners.join)
        self._wait(waiter, deadline)
        waiter.kill()
        hard = None if deadline is None else deadline + SHUTDOWN_MARGIN
        if self._hurry.is_set():
            hard = min(hard or float("inf"), time.monotonic() + SHUTDOWN_MARGIN)
        if self.running:
            count = len(self.running)
            why = (f"shutdown timeout ({timeout:g} s) passed" if timeout and not self._hurry.is_set()
                   else "asked to stop at once")
            log.warning("%s: giving %d running %s back to the queue",
                        why, count, "job" if count == 1 else "jobs")
            for job_id in list(self.running):
                self.runners.interrupt(job_id, WorkerShutdown())
            self.runners.join(timeout=1.0 if hard is None else _left(hard))
        self.runners.close()
        held = self.committer.stop(hard)
        for lane, holds in zip(self._lanes, held or ()):
            if holds:
                # Redis says we hold jobs after every outcome was written: leased
                # by a wait Redis served after the first check (_stop_fetcher).
                self._give_back_orphans_by(lane, hard, lane.maybe_orphans or LEASED_AFTER_STOP,
                                           forget=True)
        self.lifeline.stop()
        for lane in self._lanes:
            if lane.client is not None:
                lane.client.disconnect()

    def _wait(self, greenlet: gevent.Greenlet, deadline: float | None, hurry: bool = True) -> bool:
        """Wait for `greenlet` until `deadline` (and a hurry, if `hurry`); True if it ended."""
        gevent.wait([greenlet, self._hurry] if hurry else [greenlet], timeout=_left(deadline), count=1)
        return greenlet.ready()

    def _stop_fetcher(self, lane: Lane, deadline: float | None) -> None:
        if lane.parked is not None:
            # Only a wait (or a back-off) is lost, unless the fetch pipelined
            # behind a BLMOVE had just leased jobs: those are given back
            # below. redis-py closes a connection whose read was
            # interrupted, which ends the wait once Redis sees the close.
            lane.maybe_orphans = lane.parked or lane.maybe_orphans
            lane.fetcher.kill()
        elif not self._wait(lane.fetcher, deadline):
            # A fetch in flight: its jobs start and run like the others,
            # unless Redis does not answer before the deadline (or a hurry).
            lane.fetcher.kill()
            lane.maybe_orphans = "by a fetch this stop cut short"
        if lane.maybe_orphans and not self._hurry.is_set() and _left(deadline) != 0:
            # Now, not after the running jobs: they may take minutes.
            self._give_back_orphans_by(lane, deadline, lane.maybe_orphans)

    def _give_back_orphans_by(self, lane: Lane, deadline: float | None, how: str,
                              forget: bool = False) -> None:
        """_give_back_orphans, abandoned at `deadline` (or a hurry, unless
        `forget`); `forget`: then a heartbeat, which forgets this process in
        Redis if it holds nothing any more (and in the registry of live workers)."""
        def give_back() -> None:
            try:
                self._give_back_orphans(lane, how)
                if forget:
                    lane.broker.heartbeat(self.process_id, lane.client, leaving=True)
            except REDIS_TROUBLE as exc:
                log.warning("could not give back jobs leased %s (%r); the stale flush will", how, exc)

        giver = gevent.spawn(give_back)
        if not self._wait(giver, deadline, hurry=not forget):
            giver.kill()
            log.warning("could not give back jobs leased %s before the shutdown deadline; "
                        "the stale flush will", how)
