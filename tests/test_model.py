"""Stateful property test: random sequences of script calls against a small
pure-Python model of the queue, checking the invariants after every step."""

from __future__ import annotations

import uuid
from collections import deque

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from greenq.broker import Broker
from greenq.config import connection_kwargs
from greenq.keys import Keys

PROCS = ("p1", "p2")
RESOURCES = (None, "r1", "r2")
TIMEOUT_MS = 60_000


class Model:
    """What Redis should hold: where each job is, and who holds what."""

    def __init__(self) -> None:
        self.resource: dict[str, str | None] = {}
        self.retries: dict[str, int] = {}
        self.state: dict[str, str] = {}
        self.pending: deque[str] = deque()          # left = newest, right = next to run
        self.handoff: deque[str] = deque()          # taken from pending by a waiter, leased first
        self.waiting: dict[str, deque[str]] = {}
        self.locks: dict[str, str] = {}
        self.owned: dict[str, dict[str, str]] = {p: {} for p in PROCS}  # proc -> id -> token
        self.failed: list[str] = []
        self.delayed: dict[str, bool] = {}           # given back for a knowing worker: due?
        self.submitted: dict[str, list[str]] = {}    # resource -> ids in submission order
        self.started: dict[str, list[str]] = {}      # resource -> ids in start order

    def enqueue(self, job_id: str) -> None:
        res = self.resource[job_id]
        if res is not None and res in self.locks:
            self.waiting.setdefault(res, deque()).append(job_id)
            self.state[job_id] = "waiting"
        else:
            if res is not None:
                self.locks[res] = job_id
            self.state[job_id] = "pending"
            self.pending.appendleft(job_id)

    def release(self, job_id: str) -> None:
        res = self.resource[job_id]
        if res is None or self.locks.get(res) != job_id:
            return
        queue = self.waiting.get(res)
        if queue:
            nxt = queue.popleft()
            if not queue:
                del self.waiting[res]
            self.locks[res] = nxt
            self.state[nxt] = "pending"
            self.pending.appendleft(nxt)
        else:
            del self.locks[res]

    def end_run(self, proc: str, job_id: str, retry: bool) -> str:
        del self.owned[proc][job_id]
        if retry and self.retries[job_id] > 0:
            self.retries[job_id] -= 1
            self.state[job_id] = "pending"
            self.pending.appendleft(job_id)
            return "retry"
        self.state[job_id] = "failed"
        self.failed.append(job_id)
        self.release(job_id)
        return "fail"


def test_scripts_agree_with_the_model_under_random_operations(redis_server):
    client = redis_server.client()

    class QueueMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.keys = Keys("model" + uuid.uuid4().hex[:10], "default")
            self.broker = Broker(connection_kwargs(redis_server.url, None), self.keys)
            self.model = Model()
            self.counter = 0

        def teardown(self) -> None:
            self.broker.close()

        @rule(resource=st.sampled_from(RESOURCES), retries=st.integers(0, 2))
        def submit(self, resource, retries):
            self.counter += 1
            job_id = f"j{self.counter}"
            row = [job_id, "t", resource or "", "m", b"\xc0", retries, "0"]
            assert self.broker.submit([row]) == 1
            assert self.broker.submit([row]) == 0  # a re-send adds nothing
            m = self.model
            m.resource[job_id], m.retries[job_id] = resource, retries
            if resource is not None:
                m.submitted.setdefault(resource, []).append(job_id)
            m.enqueue(job_id)

        @rule(proc=st.sampled_from(PROCS), count=st.integers(1, 3), wait=st.booleans())
        def fetch(self, proc, count, wait):
            m = self.model
            promote = sorted(job_id for job_id, due in m.delayed.items() if due)
            if wait:  # an idle worker's wait (10 ms at most) with the fetch behind it
                rows, problems = self.broker.wait_and_fetch(
                    self.broker.shared, 0.01, proc, count, TIMEOUT_MS, [])
                if m.pending:
                    m.handoff.appendleft(m.pending.pop())
            else:
                rows, problems = self.broker.fetch(self.broker.shared, proc, count, TIMEOUT_MS, [])
            assert problems == []
            for job_id in promote:  # due delayed jobs join pending before the fetch leases
                del m.delayed[job_id]
                m.state[job_id] = "pending"
                m.pending.appendleft(job_id)
            got = [(rows[i].decode(), str(rows[i + 1])) for i in range(0, len(rows), 9)]
            expected = []
            for _ in range(count):
                if m.handoff or m.pending:
                    expected.append((m.handoff or m.pending).pop())
            assert [job_id for job_id, _ in got] == expected
            for job_id, token in got:
                m.owned[proc][job_id] = token
                m.state[job_id] = "active"
                if m.resource[job_id] is not None:
                    assert m.locks[m.resource[job_id]] == job_id
                    m.started.setdefault(m.resource[job_id], []).append(job_id)

        @rule()
        def a_waiter_takes_the_next_id_and_dies_before_its_fetch(self):
            m = self.model
            if m.pending:
                client.lmove(self.keys.pending, self.keys.handoff, "RIGHT", "LEFT")
                m.handoff.appendleft(m.pending.pop())

        def _some_running(self, data, proc):
            running = sorted(self.model.owned[proc])
            return data.draw(st.sampled_from(running)) if running else None

        @rule(data=st.data(), proc=st.sampled_from(PROCS), stale_token=st.booleans())
        def complete(self, data, proc, stale_token):
            job_id = self._some_running(data, proc)
            if job_id is None:
                return
            token = self.model.owned[proc][job_id]
            if stale_token:
                assert self.broker.complete(proc, [job_id, str(int(token) + 7)]) == [-1]
                return
            assert self.broker.complete(proc, [job_id, token]) == [1]
            m = self.model
            del m.owned[proc][job_id]
            del m.state[job_id]
            m.release(job_id)

        @rule(data=st.data(), proc=st.sampled_from(PROCS), final=st.booleans())
        def fail(self, data, proc, final):
            job_id = self._some_running(data, proc)
            if job_id is None:
                return
            token = self.model.owned[proc][job_id]
            code = self.broker.fail(proc, [job_id, token, "boom", "1" if final else "0"])[0]
            outcome = self.model.end_run(proc, job_id, retry=not final)
            assert code == (2 if outcome == "retry" else 1)

        @rule(data=st.data(), proc=st.sampled_from(PROCS))
        def give_back(self, data, proc):
            job_id = self._some_running(data, proc)
            if job_id is None:
                return
            token = self.model.owned[proc][job_id]
            assert self.broker.give_back(proc, [job_id, token]) == [1]
            m = self.model
            del m.owned[proc][job_id]
            m.state[job_id] = "pending"
            m.pending.append(job_id)
            res = m.resource[job_id]
            if res is not None:
                m.started[res].pop()  # it did not really run; it will start again

        @rule(data=st.data(), proc=st.sampled_from(PROCS), grace_over=st.booleans())
        def give_back_unknown(self, data, proc, grace_over):
            job_id = self._some_running(data, proc)
            if job_id is None:
                return
            token = self.model.owned[proc][job_id]
            code = self.broker.give_back_unknown(proc, [job_id, token, "unknown"],
                                                 0 if grace_over else TIMEOUT_MS)[0]
            m = self.model
            if grace_over:  # failed for good: its turn on its resource is over
                assert code == 1
                m.end_run(proc, job_id, retry=False)
            else:
                assert code == 3
                res = m.resource[job_id]
                if res is not None:
                    m.started[res].pop()  # it did not run; it will start again
                del m.owned[proc][job_id]
                m.state[job_id] = "scheduled"
                m.delayed[job_id] = False

        @rule()
        def delayed_jobs_come_due(self):
            for job_id in self.model.delayed:
                client.zadd(self.keys.delayed, {job_id: 0})
                self.model.delayed[job_id] = True

        @rule(proc=st.sampled_from(PROCS))
        def heartbeat(self, proc):
            owned, _now, _cancels = self.broker.heartbeat(proc)
            assert owned == len(self.model.owned[proc])

        @rule(proc=st.sampled_from(PROCS))
        def process_goes_silent_then_flush(self, proc):
            # Time passing for one process: its last beat moves an hour back.
            if self.model.owned[proc]:
                client.hset(self.keys.beats, proc, 1)
                client.zadd(self.keys.procs, {proc: 1})
            rows = self.broker.flush_stale(1000)
            flushed = {rows[i].decode(): rows[i + 1].decode() for i in range(0, len(rows), 9)}
            m = self.model
            expected = {}
            for job_id in sorted(m.owned[proc]):
                expected[job_id] = m.end_run(proc, job_id, retry=True)
            assert flushed == expected

        @rule(proc=st.sampled_from(PROCS))
        def process_dies_and_its_master_reclaims_its_jobs(self, proc):
            rows, left = self.broker.reclaim_process(proc, "dead", 1000)
            reclaimed = {rows[i].decode(): rows[i + 1].decode() for i in range(0, len(rows), 9)}
            m = self.model
            expected = {}
            for job_id in sorted(m.owned[proc]):
                expected[job_id] = m.end_run(proc, job_id, retry=True)
            assert (reclaimed, left) == (expected, 0)

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
                del self.model.state[job_id]
            self.model.failed = []

        @invariant()
        def redis_matches_the_model(self):
            m, k = self.model, self.keys
            ids = sorted(m.state)
            pipe = client.pipeline(transaction=True)
            pipe.lrange(k.pending, 0, -1).lrange(k.handoff, 0, -1).lrange(k.failed, 0, -1)
            pipe.hgetall(k.locks).hgetall(k.held)
            for res in ("r1", "r2"):
                pipe.lrange(k.wait(res), 0, -1)
            for proc in PROCS:
                pipe.zrange(k.owned(proc), 0, -1)
            pipe.zrange(k.delayed, 0, -1)
            for job_id in ids:
                pipe.hget(k.job(job_id), "state")
            replies = pipe.execute()
            strings = lambda items: [x.decode() for x in items]  # noqa: E731
            pending, handoff, failed = (strings(reply) for reply in replies[:3])
            locks, held = replies[3], replies[4]
            assert pending == list(m.pending) and handoff == list(m.handoff)
            assert failed == m.failed
            assert {a.decode(): b.decode() for a, b in locks.items()} == m.locks
            # the holders that jobs wait behind, and only those, are noted
            assert {a.decode(): b.decode() for a, b in held.items()} == \
                {m.locks[res]: res for res, queue in m.waiting.items() if queue}
            assert strings(replies[5]) == list(m.waiting.get("r1", ()))
            assert strings(replies[6]) == list(m.waiting.get("r2", ()))
            for proc, owned in zip(PROCS, replies[7:9]):
                assert set(strings(owned)) == set(m.owned[proc])
            # each job in exactly one place, and its record says so
            assert sorted(strings(replies[9])) == sorted(m.delayed)
            places = pending + handoff + failed + [j for q in m.waiting.values() for j in q] \
                + [j for p in PROCS for j in m.owned[p]] + list(m.delayed)
            assert sorted(places) == ids
            assert strings(replies[10:]) == [m.state[j] for j in ids]
            # one holder per resource (the lock), and first runs in submission order
            for res, order in m.started.items():
                first_runs = list(dict.fromkeys(order))
                assert first_runs == m.submitted[res][:len(first_runs)]
            stats = self.broker.stats()
            assert stats["pending"] == len(m.pending) + len(m.handoff)
            assert stats["failed"] == len(m.failed)
            assert stats["waiting"] == sum(len(q) for q in m.waiting.values())
            assert stats["active"] == sum(len(o) for o in m.owned.values())
            assert stats["scheduled"] == len(m.delayed)

    run_state_machine_as_test(QueueMachine, settings=settings(
        max_examples=30, stateful_step_count=30, deadline=None,
        suppress_health_check=list(HealthCheck)))
    client.close()
