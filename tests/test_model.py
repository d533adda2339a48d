"""Stateful property test: random sequences of script calls against a small
pure-Python model of the queue, checking the invariants after every step.

The model covers the job life cycle (issue 13): submits with caller-chosen
ids (idempotent while a record exists) and coalescing ones, cancel in every
state, and ended records kept for result_ttl (or deleted at once with 0);
and retries that wait out a back-off (issue 14), from fail.lua's wait or,
for dead jobs, from the task's policy in retry_policies: such a job is
"scheduled", in the delayed set, and still holds its resource.
After every step: each job is in exactly one state, its record says that
state (or is gone exactly when it should be), one holder per resource, and
first runs per resource in submission order."""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass

import pytest
import redis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)

from greenq.broker import Broker
from greenq.config import connection_kwargs
from greenq.job import FETCH_ROW
from greenq.keys import Keys
from greenq.registry import Task

PROCS = ("p1", "p2")
RESOURCES = (None, "r1", "r2")
TASKS = ("t", "u")
CHOSEN_IDS = ("k1", "k2", "k3")   # caller-chosen job ids, submitted again and again
TIMEOUT_MS = 60_000
STATES = {"scheduled", "waiting", "pending", "active", "succeeded", "failed", "cancelled"}
NOT_STARTED = {"pending", "waiting", "scheduled"}
HOLDING = {"pending", "active", "scheduled"}   # a job in these states holds its resource
KEPT = {"succeeded", "cancelled"}               # ended, and expire after result_ttl

# One submitted row: resource, task, retries, a chosen id (None: a fresh one), coalesce.
ROWS = st.lists(st.tuples(st.sampled_from(RESOURCES), st.sampled_from(TASKS), st.integers(0, 2),
                          st.sampled_from((None, *CHOSEN_IDS)), st.booleans()),
                min_size=1, max_size=3)


@dataclass
class ModelJob:
    serial: int           # submission order, unique even when an id is used again
    task: str
    resource: str | None
    params: bytes
    retries: int
    state: str = "pending"
    mark: bool = False    # a cancel reached it while it ran (record field "cancel")
    # False while a job submitted with a delay waits for its time: it has no
    # place in its resource's order yet (its serial is drawn when it gets one).
    placed: bool = True


class Model:
    """What Redis should hold: each job's state, where its id is, and who
    holds what. `keep`: result_ttl > 0 (ended records stay, expiring);
    otherwise a succeeded or cancelled job's record goes as soon as no list
    names its id."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.jobs: dict[str, ModelJob] = {}         # every id that has a record
        self.pending: deque[str] = deque()          # left = newest, right = next to run
        self.handoff: deque[str] = deque()          # taken from pending by a waiter, leased first
        self.waiting: dict[str, deque[str]] = {}
        self.locks: dict[str, str] = {}
        self.owned: dict[str, dict[str, str]] = {p: {} for p in PROCS}  # proc -> id -> token
        self.failed: list[str] = []
        # given back for a knowing worker, or waiting out a retry's back-off: due?
        self.delayed: dict[str, bool] = {}
        self.policies: set[str] = set()              # tasks with a retry policy in Redis
        self.submitted: dict[str, list[int]] = {}    # resource -> serials in submission order
        self.started: dict[str, list[int]] = {}      # resource -> serials in start order
        self.serial = 0
        self.last_token = 0

    # -- where ids are ---------------------------------------------------------

    def listed(self, job_id: str) -> bool:
        """Whether a list still names the id (a cancelled id stays until skipped)."""
        return job_id in self.pending or job_id in self.handoff or \
            any(job_id in queue for queue in self.waiting.values())

    def skipped(self) -> int:
        """Cancelled ids and wake-up ids ("") in pending or handoff (counts "skipped")."""
        return sum(j == "" or self.jobs[j].state == "cancelled"
                   for j in (*self.pending, *self.handoff))

    def end(self, job_id: str, state: str) -> None:
        self.jobs[job_id].state = state
        if state in KEPT and not self.keep and not self.listed(job_id):
            del self.jobs[job_id]   # result_ttl 0: gone at once

    def bury(self, job_id: str) -> None:
        """A cancelled id left its last list (a fetch or a release skipped it)."""
        if not self.keep:
            del self.jobs[job_id]

    # -- the scripts' shared steps ------------------------------------------------

    def submit(self, job_id: str, task: str, resource: str | None, params: bytes,
               retries: int, coalesce: bool) -> tuple[str, bool]:
        """(the id the row ended up in, whether a job was added)."""
        if job_id in self.jobs:
            return job_id, False
        target = self.coalesce_target(task, resource) if coalesce else None
        if target is not None:
            self.jobs[target].params, self.jobs[target].retries = params, retries
            return target, False
        self.serial += 1
        self.jobs[job_id] = ModelJob(self.serial, task, resource, params, retries)
        if resource is not None:
            self.submitted.setdefault(resource, []).append(self.serial)
        self.enqueue(job_id)
        return job_id, True

    def coalesce_target(self, task: str, resource: str) -> str | None:
        holder = self.locks.get(resource)
        if holder is None:
            return None
        queue = self.waiting.get(resource)
        newest = self.jobs[queue[-1] if queue else holder]
        if newest.state in NOT_STARTED and newest.task == task:
            return queue[-1] if queue else holder
        return None

    def enqueue(self, job_id: str) -> None:
        res = self.jobs[job_id].resource
        if res is not None and res in self.locks:
            self.waiting.setdefault(res, deque()).append(job_id)
            self.jobs[job_id].state = "waiting"
        else:
            if res is not None:
                self.locks[res] = job_id
            self.jobs[job_id].state = "pending"
            self.pending.appendleft(job_id)

    def release(self, job_id: str) -> None:
        res = self.jobs[job_id].resource
        if res is None or self.locks.get(res) != job_id:
            return
        queue = self.waiting.get(res, deque())
        while queue:
            nxt = queue.popleft()
            if self.jobs[nxt].state == "cancelled":
                self.bury(nxt)
                continue
            self.locks[res] = nxt
            self.jobs[nxt].state = "pending"
            self.pending.appendleft(nxt)
            break
        else:
            del self.locks[res]
        if not queue:
            self.waiting.pop(res, None)

    def lease(self, proc: str, job_id: str, token: str) -> None:
        assert int(token) > self.last_token   # a fencing token: larger for every run
        self.last_token = int(token)
        self.owned[proc][job_id] = token
        job = self.jobs[job_id]
        job.state = "active"
        if job.resource is not None:
            assert self.locks[job.resource] == job_id
            self.started.setdefault(job.resource, []).append(job.serial)

    def unstart(self, job_id: str) -> None:
        """A run that did not really happen (given back): it will start again."""
        job = self.jobs[job_id]
        if job.resource is not None:
            assert self.started[job.resource].pop() == job.serial

    def end_run(self, proc: str, job_id: str, retry: bool, cancelled: bool = False,
                wait: bool = False) -> str:
        """A run ended by fail or a stale flush: "retry", "delay" (a retry
        after a back-off: `wait`), "fail" or "cancel"."""
        del self.owned[proc][job_id]
        job = self.jobs[job_id]
        if job.mark or cancelled:
            self.release(job_id)
            self.end(job_id, "cancelled")
            return "cancel"
        if retry and job.retries > 0:
            job.retries -= 1
            if wait:   # it keeps its resource while it waits
                job.state = "scheduled"
                self.delayed[job_id] = False
                return "delay"
            job.state = "pending"
            self.pending.appendleft(job_id)
            return "retry"
        self.failed.append(job_id)
        self.release(job_id)
        self.end(job_id, "failed")
        return "fail"

    def cancel(self, job_id: str) -> int:
        job = self.jobs.get(job_id)
        if job is None or job.state not in NOT_STARTED | {"active"}:
            return 0
        if job.state == "active":
            job.mark = True
        elif job.state == "scheduled":
            del self.delayed[job_id]
            self.release(job_id)
            self.end(job_id, "cancelled")
        else:   # pending or waiting: its id stays where it is, marked
            self.release(job_id)
            job.state = "cancelled"
        return 1


class QueueMachine(RuleBasedStateMachine):
    """The scripts, driven through the Broker, against the Model. A subclass
    made by machine() sets where Redis is and the result_ttl."""

    url = ""
    client: redis.Redis
    result_ttl = 0

    def __init__(self) -> None:
        super().__init__()
        self.keys = Keys("model" + uuid.uuid4().hex[:10], "default")
        self.broker = Broker(connection_kwargs(self.url, None), self.keys,
                             result_ttl=self.result_ttl)
        self.model = Model(keep=self.result_ttl > 0)
        self.counter = 0
        self.cancelled_in: set[str] = set()   # the states cancel() met a job in

    def teardown(self) -> None:
        self.broker.close()

    @rule(rows=ROWS, resend=st.booleans())
    def submit(self, rows, resend):
        m = self.model
        sent, expected_ids, expected_added = [], [], 0
        for resource, task, retries, chosen, coalesce in rows:
            self.counter += 1
            job_id = chosen or f"j{self.counter}"
            params = f"p{self.counter}".encode()
            coalesce = coalesce and resource is not None   # the API refuses it without one
            sent.append([job_id, task, resource or "", "m", params, retries,
                         "1" if coalesce else "0"])
            final_id, added = m.submit(job_id, task, resource, params, retries, coalesce)
            expected_ids.append(final_id)
            expected_added += added
        if resend:
            # The same call sent again (a broken connection hid its reply):
            # it adds nothing and names the jobs its first run merged into.
            calls = self.broker.submit_calls(sent)
            first = self.broker.run_batch(self.broker.shared, calls)
            assert self.broker.run_batch(self.broker.shared, calls) == [[0, first[0][1]]]
            assert first[0][0] == expected_added
            merged = first[0][1]
            ids = [row[0] for row in sent]
            for position, job_id in zip(merged[0::2], merged[1::2]):
                ids[position - 1] = job_id.decode()
            assert ids == expected_ids
        else:
            assert self.broker.add(sent) == (expected_added, expected_ids)

    def _wake_id_pushed(self, pending_was_empty: bool) -> None:
        """A job put in the delayed set pushes an empty id into an empty
        pending list when it is due before every other (include/delay.lua);
        whether it was the earliest depends on drawn back-offs, so the model
        reads that from Redis. It can only be the head, only after an empty
        pending, and the list comparison catches one pushed otherwise."""
        if pending_was_empty and self.client.lindex(self.keys.pending, -1) == b"":
            self.model.pending.append("")

    @rule(resource=st.sampled_from(RESOURCES), task=st.sampled_from(TASKS))
    def submit_delayed(self, resource, task):
        """A job due in ten minutes: scheduled, outside its resource's order
        until delayed_jobs_come_due and a fetch promotes it."""
        m = self.model
        self.counter += 1
        job_id, params = f"j{self.counter}", f"p{self.counter}".encode()
        row = [job_id, task, resource or "", "m", params, 0, "0", "+600000"]
        was_empty = not m.pending
        assert self.broker.add([row]) == (1, [job_id])
        self._wake_id_pushed(was_empty)
        m.jobs[job_id] = ModelJob(0, task, resource, params, 0, state="scheduled", placed=False)
        m.delayed[job_id] = False

    @rule(proc=st.sampled_from(PROCS), count=st.integers(1, 3), wait=st.booleans(),
          knows=st.booleans())
    def fetch(self, proc, count, wait, knows):
        """`knows`: the fetching process registered the tasks; one that did
        not passes over the jobs its call promoted (fetch.lua)."""
        m = self.model
        promote = sorted(job_id for job_id, due in m.delayed.items() if due)
        timeouts = [x for task in TASKS for x in (task, TIMEOUT_MS)] if knows else []
        if wait:  # an idle worker's wait (10 ms at most) with the fetch behind it
            rows, problems = self.broker.wait_and_fetch(
                self.broker.shared, 0.01, proc, count, TIMEOUT_MS, timeouts)
            if m.pending:
                m.handoff.appendleft(m.pending.pop())
        else:
            rows, problems = self.broker.fetch(self.broker.shared, proc, count, TIMEOUT_MS,
                                               timeouts)
        assert problems == []
        for job_id in promote:  # due delayed jobs join pending before the fetch leases
            del m.delayed[job_id]
            job = m.jobs[job_id]
            if not job.placed:   # submitted with a delay: its place in its resource's order
                m.serial += 1
                job.serial, job.placed = m.serial, True
                if job.resource is not None:
                    m.submitted.setdefault(job.resource, []).append(job.serial)
                m.enqueue(job_id)
            else:                # it kept its resource while it waited
                job.state = "pending"
                m.pending.appendleft(job_id)
        got = [(rows[i].decode(), str(rows[i + 1])) for i in range(0, len(rows), FETCH_ROW)]
        expected, passed_over = [], []
        while len(expected) < count and (m.handoff or m.pending):
            job_id = (m.handoff or m.pending).pop()
            if job_id == "":
                continue         # a wake-up id: skipped
            if m.jobs[job_id].state == "cancelled":
                m.bury(job_id)   # skipped: a cancelled job never starts
            elif job_id in promote and not knows:
                passed_over.append(job_id)
            else:
                expected.append(job_id)
        m.pending.extend(reversed(passed_over))   # back at the head, in their order
        assert [job_id for job_id, _ in got] == expected
        for job_id, token in got:
            m.lease(proc, job_id, token)

    @rule()
    def a_waiter_takes_the_next_id_and_dies_before_its_fetch(self):
        m = self.model
        if m.pending:
            self.client.lmove(self.keys.pending, self.keys.handoff, "RIGHT", "LEFT")
            m.handoff.appendleft(m.pending.pop())

    @rule(job_id=st.sampled_from((*CHOSEN_IDS, "nope")))
    def cancel_an_id_without_a_record(self, job_id):
        if job_id not in self.model.jobs:
            assert self.broker.cancel(job_id) == 0

    @rule(state=st.sampled_from(sorted(STATES)), pick=st.integers(0, 9))
    def cancel(self, state, pick):
        """A job in `state` (ended ones included), if there is one: a state
        first, so that rare states get their share."""
        m = self.model
        in_state = sorted(j for j, job in m.jobs.items() if job.state == state)
        if not in_state:
            return
        job_id = in_state[pick % len(in_state)]
        self.cancelled_in.add(state)
        owner = next((p for p in PROCS if job_id in m.owned[p]), None)
        assert self.broker.cancel(job_id) == m.cancel(job_id)
        if owner is not None:   # its process learns of it from its next heartbeat
            assert job_id.encode() in self.broker.heartbeat(owner)[2]

    def _some_running(self, proc, pick):
        running = sorted(self.model.owned[proc])
        return running[pick % len(running)] if running else None

    @rule(proc=st.sampled_from(PROCS), pick=st.integers(0, 9), stale_token=st.booleans())
    def complete(self, proc, pick, stale_token):
        job_id = self._some_running(proc, pick)
        if job_id is None:
            return
        m = self.model
        token = m.owned[proc][job_id]
        if stale_token:
            assert self.broker.complete(proc, [job_id, str(int(token) + 7)]) == [-1]
            return
        cancelled = m.jobs[job_id].mark
        assert self.broker.complete(proc, [job_id, token]) == [4 if cancelled else 1]
        del m.owned[proc][job_id]
        m.release(job_id)
        m.end(job_id, "cancelled" if cancelled else "succeeded")

    @rule(proc=st.sampled_from(PROCS), pick=st.integers(0, 9), final=st.booleans(),
          wait=st.booleans())
    def fail(self, proc, pick, final, wait=False):
        """`wait`: a retry waits out a back-off (its task's, as the committer
        draws it) in the delayed set."""
        job_id = self._some_running(proc, pick)
        if job_id is None:
            return
        m = self.model
        token = m.owned[proc][job_id]
        # A run stopped by JobCancelled says so ("c"); it only is after a cancel.
        how = "c" if m.jobs[job_id].mark and final else "1" if final else "0"
        was_empty = not m.pending
        code = self.broker.fail(proc, [job_id, token, "boom", how],
                                waits=[TIMEOUT_MS if wait else 0])[0]
        outcome = m.end_run(proc, job_id, retry=not final, wait=wait)
        self._wake_id_pushed(was_empty)
        assert code == {"retry": 2, "delay": 2, "fail": 1, "cancel": 4}[outcome]

    @rule(task=st.sampled_from(TASKS), on=st.booleans())
    def set_retry_policy(self, task, on):
        """A worker process of `task` started (Broker.publish_retry_policies),
        with or without a retry_delay: the flushes read it."""
        def perform(params):
            return None

        self.broker.publish_retry_policies(
            [Task(task, perform, retry_delay=60.0 if on else 0.0)])
        (self.model.policies.add if on else self.model.policies.discard)(task)

    @rule(proc=st.sampled_from(PROCS), pick=st.integers(0, 9))
    def give_back(self, proc, pick):
        job_id = self._some_running(proc, pick)
        if job_id is None:
            return
        m = self.model
        token = m.owned[proc][job_id]
        code = self.broker.give_back(proc, [job_id, token])[0]
        if m.jobs[job_id].mark:   # a cancel reached it: it never runs again
            assert code == 4
            m.end_run(proc, job_id, retry=False)
            return
        assert code == 1
        del m.owned[proc][job_id]
        m.unstart(job_id)
        m.jobs[job_id].state = "pending"
        m.pending.append(job_id)

    @rule(proc=st.sampled_from(PROCS), pick=st.integers(0, 9), grace_over=st.booleans())
    def give_back_unknown(self, proc, pick, grace_over):
        job_id = self._some_running(proc, pick)
        if job_id is None:
            return
        m = self.model
        token = m.owned[proc][job_id]
        code = self.broker.give_back_unknown(proc, [job_id, token, "unknown"],
                                             0 if grace_over else TIMEOUT_MS)[0]
        if m.jobs[job_id].mark:   # a cancel came after its fetch: it ends cancelled
            assert code == 4
            m.end_run(proc, job_id, retry=False)
        elif grace_over:  # failed for good: its turn on its resource is over
            assert code == 1
            m.end_run(proc, job_id, retry=False)
        else:
            assert code == 3
            m.unstart(job_id)   # it did not run; it will start again
            del m.owned[proc][job_id]
            m.jobs[job_id].state = "scheduled"
            m.delayed[job_id] = False

    @rule()
    def delayed_jobs_come_due(self):
        for job_id in self.model.delayed:
            self.client.zadd(self.keys.delayed, {job_id: 0})
            self.model.delayed[job_id] = True

    @rule(proc=st.sampled_from(PROCS))
    def heartbeat(self, proc):
        m = self.model
        owned, _now, cancels = self.broker.heartbeat(proc)
        assert owned == len(m.owned[proc])
        assert {c.decode() for c in cancels} == {j for j in m.owned[proc] if m.jobs[j].mark}

    @rule(proc=st.sampled_from(PROCS))
    def process_goes_silent_then_flush(self, proc):
        # Time passing for one process: its last beat moves an hour back.
        if self.model.owned[proc]:
            self.client.hset(self.keys.beats, proc, 1)
            self.client.zadd(self.keys.procs, {proc: 1})
        was_empty = not self.model.pending
        rows = self.broker.flush_stale(1000)
        flushed = {rows[i].decode(): rows[i + 1].decode() for i in range(0, len(rows), 9)}
        m = self.model
        expected = {}
        for job_id in sorted(m.owned[proc]):
            expected[job_id] = m.end_run(proc, job_id, retry=True,
                                         wait=m.jobs[job_id].task in m.policies)
        assert flushed == expected
        self._wake_id_pushed(was_empty)

    @rule(proc=st.sampled_from(PROCS))
    def process_dies_and_its_master_reclaims_its_jobs(self, proc):
        was_empty = not self.model.pending
        rows, left = self.broker.reclaim_process(proc, "dead", 1000)
        reclaimed = {rows[i].decode(): rows[i + 1].decode() for i in range(0, len(rows), 9)}
        m = self.model
        expected = {}
        for job_id in sorted(m.owned[proc]):
            expected[job_id] = m.end_run(proc, job_id, retry=True,
                                         wait=m.jobs[job_id].task in m.policies)
        assert (reclaimed, left) == (expected, 0)
        self._wake_id_pushed(was_empty)

    @rule()
    def retry_failed(self):
        moved = self.broker.retry_failed(1000)
        m = self.model
        assert moved == len(m.failed)
        for job_id in m.failed:
            m.enqueue(job_id)
        m.failed = []

    @rule()
    def delete_failed(self):
        assert self.broker.delete_failed(1000) == len(self.model.failed)
        for job_id in self.model.failed:
            del self.model.jobs[job_id]
        self.model.failed = []

    @precondition(lambda self: self.model.keep)
    @rule()
    def result_ttl_passes(self):
        """Time passing for the kept records: each ended one expires (its
        PTTL, checked by the invariant, is what Redis would wait)."""
        m = self.model
        for job_id, job in list(m.jobs.items()):
            if job.state in KEPT and not m.listed(job_id):
                assert self.client.delete(self.keys.job(job_id)) == 1
                del m.jobs[job_id]

    @invariant()
    def redis_matches_the_model(self):
        m, k = self.model, self.keys
        ids = sorted(m.jobs)
        pipe = self.client.pipeline(transaction=True)
        pipe.lrange(k.pending, 0, -1).lrange(k.handoff, 0, -1).lrange(k.failed, 0, -1)
        pipe.hgetall(k.locks).hgetall(k.held)
        for res in ("r1", "r2"):
            pipe.lrange(k.wait(res), 0, -1)
        for proc in PROCS:
            pipe.zrange(k.owned(proc), 0, -1)
        for proc in PROCS:
            pipe.smembers(k.cancels(proc))
        pipe.zrange(k.delayed, 0, -1, withscores=True)
        pipe.keys(k.prefix + "job:*")
        pipe.time()
        for job_id in ids:
            pipe.hmget(k.job(job_id), "state", "cancel", "params", "retries", "task")
            pipe.pttl(k.job(job_id))
        replies = pipe.execute()
        strings = lambda items: [x.decode() for x in items]  # noqa: E731
        pending, handoff, failed = (strings(reply) for reply in replies[:3])
        locks, held = replies[3], replies[4]
        # Empty ids are wake-ups for idle workers (include/delay.lua), no
        # jobs: counted out of "pending" as "skipped" (the stats check below).
        assert pending == list(m.pending) and handoff == list(m.handoff)
        assert failed == m.failed
        assert {a.decode(): b.decode() for a, b in locks.items()} == m.locks
        # the holders that jobs (or cancelled ids not yet skipped) wait
        # behind, and only those, are noted
        assert {a.decode(): b.decode() for a, b in held.items()} == \
            {m.locks[res]: res for res, queue in m.waiting.items() if queue}
        assert strings(replies[5]) == list(m.waiting.get("r1", ()))
        assert strings(replies[6]) == list(m.waiting.get("r2", ()))
        for proc, owned in zip(PROCS, replies[7:9]):
            assert set(strings(owned)) == set(m.owned[proc])
        # a process is told of exactly its running jobs a cancel reached
        for proc, cancels in zip(PROCS, replies[9:11]):
            assert set(strings(cancels)) == {j for j in m.owned[proc] if m.jobs[j].mark}
        assert sorted(job_id.decode() for job_id, _ in replies[11]) == sorted(m.delayed)
        # a job waiting out a back-off (or for a knowing worker) is not due
        # before its time: no fetch may promote it yet
        now = replies[13][0] * 1000 + replies[13][1] // 1000
        for job_id, due in replies[11]:
            assert m.delayed[job_id.decode()] or due > now, (job_id, due, now)
        # a record exists exactly for the jobs the model knows: none leaks
        assert sorted(key.decode()[len(k.prefix) + 4:] for key in replies[12]) == ids

        # Each job in exactly one state, at exactly one place that fits it.
        place: dict[str, str] = {}
        for where, members in (("pending", pending + handoff), ("failed", failed),
                               ("waiting", [j for q in m.waiting.values() for j in q]),
                               ("active", [j for p in PROCS for j in m.owned[p]]),
                               ("scheduled", list(m.delayed))):
            for job_id in members:
                if job_id == "":
                    # A wake-up, no job: one a dying waiter moved to the
                    # hand-off list may meet a new one pushed into pending.
                    continue
                assert job_id not in place, f"{job_id} both {place[job_id]} and {where}"
                place[job_id] = where
        for job_id, record, pttl in zip(ids, replies[14::2], replies[15::2]):
            job = m.jobs[job_id]
            state, mark, params, retries, task = record
            assert job.state in STATES
            assert state == job.state.encode(), (job_id, state, job)
            if job.state in KEPT:   # ended: in no list, or cancelled and not yet skipped
                assert place.get(job_id) in (None, "pending", "waiting") and \
                    (job.state == "cancelled" or job_id not in place)
            else:
                assert place.get(job_id) == job.state
            if job.state in KEPT and job_id not in place:
                assert 0 < pttl <= self.result_ttl * 1000, (job_id, job.state, pttl)   # expires after result_ttl
            else:
                assert pttl == -1, (job_id, job.state, pttl)
            if job.state not in KEPT:
                # the cancel mark only on a running job it reached: a
                # queued job carries none (it would end its next run)
                assert (mark == b"1") == (job.state == "active" and job.mark), (job_id, job)
                assert (params, int(retries or 0), task) == \
                    (job.params, job.retries, job.task.encode())

        # one holder per resource (the lock), and first runs in submission order
        for res in ("r1", "r2"):
            holders = {j for j, job in m.jobs.items()
                       if job.resource == res and job.state in HOLDING and job.placed}
            assert holders == ({m.locks[res]} if res in m.locks else set())
            order = m.started.get(res, [])
            first_runs = list(dict.fromkeys(order))
            assert first_runs == sorted(first_runs)
            never_ran = [job.serial for job in m.jobs.values() if job.resource == res
                         and job.state in NOT_STARTED and job.placed and job.serial not in order]
            assert all(serial > max(order, default=0) for serial in never_ran)
        stats = self.broker.stats()
        assert stats["pending"] == len(m.pending) + len(m.handoff) - m.skipped()
        assert stats["failed"] == len(m.failed)
        assert stats["waiting"] == sum(m.jobs[j].state == "waiting"
                                       for q in m.waiting.values() for j in q)
        assert stats["active"] == sum(len(o) for o in m.owned.values())
        assert stats["scheduled"] == len(m.delayed)


def machine(redis_server, result_ttl: float) -> type[QueueMachine]:
    return type("QueueMachine", (QueueMachine,), {
        "url": redis_server.url, "client": redis_server.client(), "result_ttl": result_ttl})


@pytest.mark.parametrize("result_ttl", [0, 60])
def test_scripts_agree_with_the_model_under_random_operations(redis_server, result_ttl):
    machine_class = machine(redis_server, result_ttl)
    # No shrinking: each step is a few Redis round trips, and shrinking a
    # 50-step failure took minutes; the failing sequence is printed as is.
    run_state_machine_as_test(machine_class, settings=settings(
        max_examples=80, stateful_step_count=50, deadline=None,
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=list(HealthCheck)))
    machine_class.client.close()


@pytest.mark.parametrize("result_ttl", [0, 60])
def test_a_fixed_walk_cancels_a_job_in_every_state_as_the_model_says(redis_server, result_ttl):
    """The random walk meets some states rarely (a scheduled job, a kept
    succeeded one): this walk meets each, and each cancel path of a running
    job (complete, give back, fail, flush, reclaim), checking the invariant
    after every step. Ids j<n> are numbered by row, from j1."""
    machine_class = machine(redis_server, result_ttl)
    walk = machine_class()
    keep = result_ttl > 0

    def step(name, **kwargs):
        getattr(walk, name)(**kwargs)
        walk.redis_matches_the_model()

    def state(job_id):
        job = walk.model.jobs.get(job_id)
        return job and job.state

    try:
        step("submit", resend=False, rows=[
            ("r1", "t", 0, None, False), ("r1", "t", 0, None, False), ("r1", "t", 0, None, False),
            (None, "t", 0, None, False), ("r2", "t", 1, None, False), (None, "t", 0, "k1", False)])
        step("cancel", state="waiting", pick=1)         # j3: stays in wait:r1, marked
        step("cancel", state="pending", pick=0)         # j1, the holder: r1 passes to j2
        assert (state("j1"), state("j2"), state("j3")) == ("cancelled", "pending", "cancelled")
        step("fetch", proc="p1", count=3, wait=False, knows=True)   # skips j1; leases j4, j5, k1
        step("cancel", state="active", pick=0)          # j4 marked
        step("complete", proc="p1", pick=0, stale_token=False)   # j4 ends cancelled
        step("give_back_unknown", proc="p1", pick=1, grace_over=False)   # k1 scheduled
        step("cancel", state="scheduled", pick=0)       # k1 ends cancelled at once
        step("fetch", proc="p2", count=3, wait=True, knows=True)    # j2
        step("cancel", state="active", pick=0)          # j2 marked
        step("give_back", proc="p2", pick=0)            # j2 ends cancelled; j3 skipped
        assert "r1" not in walk.model.locks
        step("complete", proc="p1", pick=0, stale_token=False)   # j5 succeeded
        step("cancel", state="succeeded", pick=0)       # kept: cancel says 0
        step("submit", resend=True, rows=[              # j7; j8 into j7; j9 (task u); j10 into j9
            ("r2", "t", 1, None, False), ("r2", "t", 2, None, True),
            ("r2", "u", 0, None, True), ("r2", "u", 1, None, True)])
        assert (walk.model.jobs["j7"].params, walk.model.jobs["j9"].retries) == (b"p8", 1)
        step("fetch", proc="p1", count=1, wait=False, knows=True)   # j7
        step("fail", proc="p1", pick=0, final=False)    # retried, keeps r2
        step("fetch", proc="p2", count=1, wait=False, knows=True)   # j7 again
        step("cancel", state="active", pick=0)
        step("process_goes_silent_then_flush", proc="p2")   # j7 ends cancelled; r2 to j9
        step("fetch", proc="p1", count=1, wait=False, knows=True)   # j9
        step("cancel", state="active", pick=0)
        step("process_dies_and_its_master_reclaims_its_jobs", proc="p1")   # j9 cancelled
        step("submit", resend=False, rows=[(None, "t", 0, "k2", False), (None, "t", 0, None, False)])
        step("fetch", proc="p1", count=2, wait=False, knows=True)   # k2, j12
        step("fail", proc="p1", pick=0, final=True)     # j12 fails for good
        step("cancel", state="failed", pick=0)          # says 0
        step("cancel", state="active", pick=0)          # k2 marked
        step("fail", proc="p1", pick=0, final=True)     # stopped by JobCancelled ("c")
        step("submit", resend=False, rows=[(None, "t", 0, "k3", False)])
        step("cancel", state="pending", pick=0)         # k3: its id stays in pending...
        step("cancel", state="cancelled", pick=0)       # ...and a second cancel says 0
        step("submit", resend=False, rows=[(None, "u", 0, "k1", False)])
        assert walk.model.jobs["k1"].task == ("t" if keep else "u")   # kept: the same job
        if keep:
            step("result_ttl_passes")
            step("submit", resend=False, rows=[(None, "u", 0, "k1", False)])
            assert walk.model.jobs["k1"].task == "u"      # expired: the id is free again
        # A retry waiting out a back-off holds r1: the job behind it waits.
        step("set_retry_policy", task="t", on=True)
        step("submit", resend=False, rows=[("r1", "t", 2, None, False),
                                           ("r1", "t", 0, None, False)])
        backing_off = walk.model.locks["r1"]
        step("fetch", proc="p2", count=3, wait=False, knows=True)
        assert state(backing_off) == "active"
        step("fail", proc="p2", pick=0, final=False, wait=True)
        assert state(backing_off) == "scheduled" and walk.model.locks["r1"] == backing_off
        step("fetch", proc="p1", count=3, wait=False, knows=True)   # nothing of r1
        assert state(backing_off) == "scheduled"
        step("delayed_jobs_come_due")
        step("fetch", proc="p1", count=3, wait=False, knows=True)
        assert state(backing_off) == "active"
        step("process_goes_silent_then_flush", proc="p1")   # dead: the task's back-off
        assert state(backing_off) == "scheduled"
        step("cancel", state="scheduled", pick=0)       # r1 passes to the job behind
        assert state(backing_off) in ("cancelled", None) and \
            walk.model.jobs[walk.model.locks["r1"]].state == "pending"
        step("set_retry_policy", task="t", on=False)
        step("retry_failed")
        step("cancel_an_id_without_a_record", job_id="nope")
        expected = STATES if keep else STATES - {"succeeded"}   # with 0, none is kept
        assert walk.cancelled_in == expected
    finally:
        walk.teardown()
        machine_class.client.close()
