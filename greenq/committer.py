"""Group commit and the tick: one round trip per process (per Redis node,
for a queue partitioned over a cluster) carries every finished job since
the last one, plus (when due) the heartbeat of all this process' running
jobs and a bounded stale flush for the whole queue, every partition."""

from __future__ import annotations

import logging
import random
import time
from typing import Callable

import gevent
import gevent.event

from . import config, joblog
from .broker import REDIS_TROUBLE, Broker, UnconfirmedWriteError
from .errors import BrokerError, LeaseLostError, UnknownTaskError
from .health import Health
from .job import ROW, Job, decode_row
from .outcomes import Outcome
from .registry import Task
from .supervisor import supervise

log = logging.getLogger(__name__)

FLUSH_LIMIT = 1000  # stale jobs reclaimed per tick at most


def _micros(seconds: float | None) -> int | str:
    """How long perform ran, for the duration histogram ("": it did not run)."""
    return "" if seconds is None else int(seconds * 1_000_000)


class Committer:
    """The one greenlet that writes a process' job outcomes and heartbeats:
    job greenlets hand it their outcome and go on; it sends whatever has
    piled up since its last round trip, in one round trip, then emits the
    events of what Redis confirmed."""

    def __init__(self, broker: Broker | list[Broker], process_id: str, tick_interval: float,
                 health: Health | None, emit: Callable, max_params_bytes: int,
                 flush_interval: float | None = None, unknown_task_grace: float = 0.0,
                 on_cancel: Callable[[list[str]], None] | None = None) -> None:
        # One broker per queue partition; a job's outcome goes to its own.
        self.brokers = list(broker) if isinstance(broker, list) else [broker]
        self.broker = self.brokers[0]
        self.process_id = process_id
        self.tick_interval = tick_interval
        # The scan costs O(log n) when nothing is stale, so it rides along
        # with the heartbeat, or runs more often when flush_stale_timeout asks.
        self.flush_interval = min(tick_interval, flush_interval or tick_interval)
        self.health = health
        self.emit = emit
        self.max_params_bytes = max_params_bytes
        self._succeeded: list[tuple[Job, str, bytes]] = []  # job, result encoding, result blob
        # Told the ids of running jobs a cancel reached, from each heartbeat's reply.
        self.on_cancel = on_cancel
        # job, error text, how (see fail.lua), ms its retry waits
        self._failed: list[tuple[Job, str, str, int]] = []
        # Task id -> its Task, for a retry's back-off (None, or a task it
        # does not know: retry at once); the registry's get, set by Worker.
        self.task_of: Callable[[str], Task | None] | None = None
        self._given_back: list[Job] = []
        self._unknown: list[tuple[Job, str]] = []  # job, why it fails should its grace be over
        self.unknown_task_grace_ms = int(unknown_task_grace * 1000)
        # Sent in a round trip whose fate is unknown: their receipts in Redis
        # (scripts/include/receipts.lua) must stay until they are settled.
        self._resending: set[str] = set()
        self._receipts_written = False
        # Finished here, outcome not yet acknowledged by Redis (buffered or in
        # flight): Redis still lists them as owned, yet they are no orphans.
        self.unsettled: set[str] = set()
        # With Broker.replicas: the last finishes ran on the master but its
        # replicas did not confirm them (BrokerError); held and sent again.
        self._unconfirmed = False
        self._wake = gevent.event.Event()
        self._stopping = False
        self._crashes_while_stopping = 0
        self._greenlet = None
        self.client = None
        self._clients: dict = {}  # node address -> its script channel
        self.round_trips = 0

    # -- called by job greenlets -------------------------------------------

    def succeeded(self, job: Job, result_encoding: str = "", result: bytes = b"") -> None:
        self.unsettled.add(job.id)
        self._succeeded.append((job, result_encoding, result))
        self._wake.set()

    def cancelled(self, job: Job) -> None:
        """`job` stopped by JobCancelled: it ends "cancelled" (fail.lua)."""
        self.unsettled.add(job.id)
        self._failed.append((job, "", "c", 0))
        self._wake.set()

    def failed(self, job: Job, error: str, final: bool = False) -> None:
        # Redis stores bytes: an error text with lone surrogates (a file name
        # that is not UTF-8, decoded by os.fsdecode) could never be sent.
        error = error.encode("utf-8", "backslashreplace").decode("utf-8")
        self.unsettled.add(job.id)
        self._failed.append((job, error, "1" if final else "0",
                             0 if final else self._retry_wait_ms(job)))
        self._wake.set()

    def _retry_wait_ms(self, job: Job) -> int:
        """How long `job`'s retry waits, should it have one left: its
        task's back-off for the n-th retry, n being the job's attempts so
        far (the run that just failed included), so the first failure waits
        about retry_delay, as include/backoff.lua reckons it for a dead job."""
        task = self.task_of(job.task_id) if self.task_of is not None and job.retries > 0 else None
        if task is None or not task.retry_delay:
            return 0
        return int(task.retry_wait(max(job.attempts, 1), random.uniform) * 1000)

    def give_back(self, job: Job) -> None:
        self.unsettled.add(job.id)
        self._given_back.append(job)
        self._wake.set()

    def give_back_unknown(self, job: Job, why: str) -> None:
        """`job` names a task this process does not know: back to the queue
        for a worker that does, or failed as an UnknownTaskError saying `why`
        once its unknown_task_grace is over (give_back_unknown.lua)."""
        self.unsettled.add(job.id)
        self._unknown.append((job, why))
        self._wake.set()

    def backlog(self) -> int:
        return len(self._succeeded) + len(self._failed) + len(self._given_back) + len(self._unknown)

    # -- the loop ------------------------------------------------------------

    def start(self) -> None:
        self.client = self._client_for(self.broker)
        self._greenlet = supervise("commit", self._loop, self.emit, self._after_crash)

    def stop(self, deadline: float | None = None) -> list[int | None] | None:
        """Commit everything still buffered, then stop (forgetting this process
        in Redis if it holds no job any more, and in the registry of live
        workers). Does nothing if it never started (the process' start()
        failed first). `deadline`
        (time.monotonic()): stop waiting for Redis then, and leave what is
        not written to the stale flush. Returns how many jobs Redis says this
        process still holds in each partition, None when unknown."""
        if self._greenlet is None:
            return None
        self._stopping = True
        self._wake.set()
        self._greenlet.join(timeout=None if deadline is None
                            else max(0.0, deadline - time.monotonic()))
        if not self._greenlet.dead:
            self._greenlet.kill()  # _commit keeps the batch it was sending: counted below
            log.error("Redis did not answer before the shutdown deadline: the outcomes of %d "
                      "jobs are not recorded; the stale flush will run them again", self.backlog())
        timer = gevent.Timeout(None if deadline is None else max(0.0, deadline - time.monotonic()))
        timer.start()
        for broker in self.brokers:
            broker.registration = ""  # no later heartbeat (the lifeline's) registers it again
        held: list[int | None] = []
        try:
            for broker in self.brokers:
                try:  # a partition whose node is gone must not cost the others theirs
                    client = self._client_for(broker)
                    held.append(broker.heartbeat(self.process_id, client, leaving=True)[0])
                    if not self._resending:
                        broker.drop_receipts(self.process_id, client)
                except REDIS_TROUBLE as exc:
                    log.warning("could not send the last heartbeat: %r", exc)
                    held.append(None)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            log.warning("could not send the last heartbeat before the shutdown deadline")
        finally:
            timer.close()
        for client in self._clients.values():
            client.disconnect()
        return held

    def _client_for(self, broker: Broker):
        """The committer's script channel to the node serving `broker`'s partition."""
        address = broker.address
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = broker.script_channel()
        return client

    def _loop(self) -> None:
        next_tick = next_flush = 0.0
        while True:
            wait = min(next_tick, next_flush) - time.monotonic()
            if wait > 0 and not self.backlog() and not self._stopping:
                self._wake.wait(wait)
            self._wake.clear()
            if self._stopping and not self.backlog():
                return
            now = time.monotonic()
            tick = now >= next_tick and not self._stopping
            flush = now >= next_flush and not self._stopping
            if self._commit(tick, flush):
                if tick:
                    next_tick = now + self.tick_interval
                if flush:
                    next_flush = now + self.flush_interval
            elif self._stopping and (self.health.down or self._unconfirmed) \
                    and self._give_up_on_stop():
                return

    def _after_crash(self) -> bool:
        # _commit put back what it had taken: start again, so that outcomes
        # are recorded and heartbeats go on. A stop gives a loop that keeps
        # crashing a few tries, then leaves the rest to the stale flush.
        if self._stopping:
            self._crashes_while_stopping += 1
            if self._crashes_while_stopping > 3:
                log.error("commit loop crashing at shutdown; %d finished jobs not recorded, "
                          "the stale flush will run them again", self.backlog())
                return False
        return True

    def _give_up_on_stop(self) -> bool:
        # Shutting down while Redis is gone: keep trying for a while, then
        # leave the rest to the stale flush (at-least-once still holds).
        if not hasattr(self, "_stop_deadline"):
            self._stop_deadline = time.monotonic() + 3 * config.SOCKET_TIMEOUT
        if time.monotonic() > self._stop_deadline:
            log.error("Redis still unreachable at shutdown; %d finished jobs not recorded, "
                      "the stale flush will run them again", self.backlog())
            return True
        return False

    def _commit(self, tick: bool, flush: bool) -> bool:
        batch = config.SCRIPT_BATCH
        succeeded, self._succeeded = self._succeeded[:batch], self._succeeded[batch:]
        failed, self._failed = self._failed[:batch], self._failed[batch:]
        given_back, self._given_back = self._given_back[:batch], self._given_back[batch:]
        unknown, self._unknown = self._unknown[:batch], self._unknown[batch:]
        if len(self.brokers) == 1:
            return self._commit_to([(self.broker, succeeded, failed, given_back, unknown)],
                                   tick, flush)
        partitions = [(broker, [], [], [], []) for broker in self.brokers]
        for outcomes, slot in ((succeeded, 1), (failed, 2), (given_back, 3), (unknown, 4)):
            for entry in outcomes:
                job = entry if isinstance(entry, Job) else entry[0]
                partitions[job.partition][slot].append(entry)
        # One round trip per node: the partitions it serves go together.
        by_node: dict = {}
        try:
            for part in partitions:
                by_node.setdefault(part[0].address, []).append(part)
        except REDIS_TROUBLE as exc:  # no cluster node gave a slot map: nothing was sent
            self._succeeded[:0] = succeeded
            self._failed[:0] = failed
            self._given_back[:0] = given_back
            self._unknown[:0] = unknown
            gevent.sleep(self.health.trouble(exc, "commit"))
            return False
        self.health.ok("commit")
        done = True
        for parts in by_node.values():
            done &= self._commit_to(parts, tick, flush)
        return done

    def _commit_to(self, partitions: list[tuple], tick: bool, flush: bool) -> bool:
        """One round trip to the node serving `partitions`: for each, the
        broker, then its succeeded, failed, given back and unknown-task jobs."""
        pid = self.process_id
        calls, handlers = [], []
        for broker, succeeded, failed, given_back, unknown in partitions:
            # The first finish call drops the receipts of earlier round trips
            # once every reply they got was seen.
            drop = self._receipts_written and not self._resending
            if succeeded:
                groups = [x for job, encoding, blob in succeeded
                          for x in (job.id, job.token, encoding, blob, _micros(job.duration))]
                calls.append(broker.complete_call(pid, groups, drop))
                handlers.append(lambda codes, jobs=succeeded: self._after_complete(jobs, codes))
                drop = False
            if failed:
                groups = [x for job, error, how, wait in failed
                          for x in (job.id, job.token, error, how, wait, _micros(job.duration))]
                calls.append(broker.fail_call(pid, groups, drop))
                handlers.append(lambda codes, jobs=failed: self._after_fail(jobs, codes))
                drop = False
            if given_back:
                pairs = [x for job in given_back for x in (job.id, job.token)]
                calls.append(broker.give_back_call(pid, pairs, drop))
                handlers.append(lambda codes, jobs=given_back: self._after_give_back(jobs, codes))
                drop = False
            if unknown:
                groups = [x for job, why in unknown
                          for x in (job.id, job.token, f"UnknownTaskError: {why}")]
                calls.append(broker.give_back_unknown_call(pid, groups,
                                                           self.unknown_task_grace_ms, drop))
                handlers.append(lambda codes, jobs=unknown:
                                self._after_give_back_unknown(jobs, codes))
            # A re-send on a new connection may write nothing (receipts answer
            # it), and WAIT covers only this connection's writes: the heartbeat,
            # which always writes, makes it cover the first send's too.
            if tick or (self._resending and broker.replicas):
                calls.append(broker.heartbeat_call(pid))
                handlers.append(self._after_heartbeat)
            if flush:
                calls.append(broker.flush_stale_call(FLUSH_LIMIT))
                handlers.append(lambda rows: self.after_flush(rows, log_lines=True))
        if not calls:
            return True
        succeeded = [x for part in partitions for x in part[1]]
        failed = [x for part in partitions for x in part[2]]
        given_back = [x for part in partitions for x in part[3]]
        unknown = [x for part in partitions for x in part[4]]
        broker = partitions[0][0]
        # Health is kept per partition: which node serves it may change.
        loops = [("commit", self.brokers.index(part[0])) for part in partitions]
        try:
            results = broker.run_batch(self._client_for(broker), calls)
        except BaseException as exc:
            # Unknown whether Redis ran them: keep them to send again. Every
            # script is lease-checked and leaves receipts, so a second run
            # changes nothing twice and returns what the first one did.
            self._succeeded[:0] = succeeded
            self._failed[:0] = failed
            self._given_back[:0] = given_back
            self._unknown[:0] = unknown
            self._resending.update(job.id for job, _ in unknown)
            self._resending.update(job.id for job, _, _ in succeeded)
            self._resending.update(job.id for job, _, _, _ in failed)
            self._resending.update(job.id for job in given_back)
            if isinstance(exc, UnconfirmedWriteError):  # the WAIT took its time: no back-off
                self._replicas_behind(exc)
                return False
            if not isinstance(exc, REDIS_TROUBLE):
                raise  # a bug, or the stop's deadline: supervisor.py / stop() deal with it
            gevent.sleep(self.health.trouble(exc, loops[0], also=tuple(loops[1:])))
            return False
        self.round_trips += 1
        for loop in loops:
            self.health.ok(loop)
        if self._unconfirmed:
            self._unconfirmed = False
            log.warning("Redis' replicas confirm the finishes again")
        if succeeded or failed or given_back or unknown:
            self._receipts_written = True
        self.unsettled.difference_update(job.id for job, _, _ in succeeded)
        self.unsettled.difference_update(job.id for job, _, _, _ in failed)
        self.unsettled.difference_update(job.id for job in given_back)
        self.unsettled.difference_update(job.id for job, _ in unknown)
        for handler, result in zip(handlers, results):
            handler(result)
        return True

    def _replicas_behind(self, exc: UnconfirmedWriteError) -> None:
        # One error event per outage, as Health does for an unreachable Redis
        # (its state is shared with the fetcher, whose calls still work).
        if not self._unconfirmed:
            self._unconfirmed = True
            self.emit("error", BrokerError(f"{exc}; finishes are held and sent again until "
                                           "the replicas confirm them"))

    # -- results -> events ---------------------------------------------------

    def _lost(self, job: Job, code: int, what: str) -> None:
        self._resending.discard(job.id)
        self.emit("error", LeaseLostError(
            f"job {job.id} ({job.task_id}) {what} after {Outcome(code).why_lost()}"))

    def _after_heartbeat(self, reply: list) -> None:
        cancels = reply[2]
        if cancels and self.on_cancel is not None:
            self.on_cancel([job_id.decode() for job_id in cancels])

    def _cancelled(self, job: Job) -> None:
        self._resending.discard(job.id)
        job.state, job.result = "cancelled", None
        if joblog.enabled(joblog.INFO):
            joblog.cancelled(job)
        self.emit("job_cancel", job)

    def _after_complete(self, succeeded: list, codes: list[int]) -> None:
        logged = joblog.enabled(joblog.INFO)  # once per batch: free when off
        for (job, _encoding, _blob), code in zip(succeeded, codes):
            if code == Outcome.DONE:
                self._resending.discard(job.id)
                job.state = "succeeded"
                if logged:
                    joblog.succeeded(job)
                self.emit("job_success", job)
            elif code == Outcome.CANCELLED:
                self._cancelled(job)
            else:
                self._lost(job, code, "succeeded")

    def _after_fail(self, failed: list, codes: list[int]) -> None:
        retries_logged = joblog.enabled(joblog.INFO)
        failures_logged = joblog.enabled(joblog.WARNING)
        for (job, error, _how, wait), code in zip(failed, codes):
            if code == Outcome.CANCELLED:
                self._cancelled(job)
            elif code == Outcome.DONE or code == Outcome.RETRIED:
                self._resending.discard(job.id)
                job.error = error
                if code == Outcome.RETRIED:
                    job.retries -= 1
                    # While it waits out a back-off it is "scheduled" (fail.lua).
                    job.state = "scheduled" if wait > 0 else "pending"
                    if retries_logged:
                        joblog.retrying(job)
                    self.emit("job_retry", job)
                else:
                    job.state = "failed"
                    if failures_logged:
                        joblog.failed(job)
                    self.emit("job_fail", job)
            else:
                self._lost(job, code, "failed")

    def _after_give_back(self, jobs: list[Job], codes: list[int]) -> None:
        logged = joblog.enabled(joblog.INFO)
        for job, code in zip(jobs, codes):
            if code == Outcome.DONE:
                self._resending.discard(job.id)
                if logged:
                    joblog.given_back(job)
            elif code == Outcome.CANCELLED:
                self._cancelled(job)
            else:
                self._lost(job, code, "was given back")

    def _after_give_back_unknown(self, unknown: list, codes: list[int]) -> None:
        for (job, why), code in zip(unknown, codes):
            if code in (Outcome.DELAYED, Outcome.DONE, Outcome.CANCELLED):
                # CANCELLED: a cancel came after its fetch; it never ran here.
                self._resending.discard(job.id)
                if code == Outcome.DONE:  # its grace was over: failed for good
                    job.error = f"UnknownTaskError: {why}"
                    job.attempts = max(job.attempts - 1, 0)  # it did not run
                    self.emit("error", UnknownTaskError(why))
                    self.emit("job_fail", job)
            else:
                self._lost(job, code, "was given back")

    def after_flush(self, rows: list, log_lines: bool = False) -> int:
        """Emit job_retry / job_fail (job_cancel for a job a cancel had
        reached) for each job a stale flush reclaimed;
        `log_lines`: and log each (a worker's periodic flush; an explicit
        force_flush_stale_jobs() reports by its return value and events)."""
        logged = log_lines and rows and joblog.enabled(joblog.WARNING)
        for start in range(0, len(rows), ROW):
            row = rows[start:start + ROW]
            try:
                job = decode_row(row, self.max_params_bytes)
            except Exception as exc:  # the event still matters more than the params
                job = getattr(exc, "job", None)
                if job is None:
                    continue
            job.token = ""
            if row[1] == b"cancel":
                job.state = "cancelled"
                self.emit("job_cancel", job)
                continue
            # "delay": retried after its task's back-off (include/reclaim.lua).
            retried = row[1] in (b"retry", b"delay")
            job.state = "scheduled" if row[1] == b"delay" else "pending" if retried else "failed"
            if logged:
                joblog.found_dead(job, retried=retried)
            self.emit("job_retry" if retried else "job_fail", job)
        return len(rows) // ROW
