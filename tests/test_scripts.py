"""Each Lua script through its Broker method, asserting on raw Redis state."""

from __future__ import annotations

import gevent
import msgpack
import pytest

from greenq.broker import Broker
from greenq.config import connection_kwargs
from greenq.job import FETCH_ROW
from greenq.keys import Keys
from greenq.queue import GreenQueue, new_job_id
from queue_state import unfinished_records

P1, P2 = "host:1:p1", "host:2:p2"
DEFAULT_MS = 10_000


# -- helpers -------------------------------------------------------------------


class Q:
    """A broker on the test Redis plus raw-state readers for its keys."""

    def __init__(self, redis_url: str, namespace: str, r, result_ttl: float = 0) -> None:
        # result_ttl 0 by default: ended records go at once, as they did
        # before results were kept (tests/test_lifecycle_scripts.py covers
        # the records kept for result_ttl).
        self.k = Keys(namespace, "default")
        self.b = Broker(connection_kwargs(redis_url, None), self.k, result_ttl)
        self.r = r
        self.client = self.b.channel(1)

    # writes through the scripts
    def row(self, task="t", resource=None, params=None, retries=0, job_id=None):
        blob = msgpack.packb(params if params is not None else {"n": 1}, use_bin_type=True)
        return [job_id or new_job_id(), task, resource or "", "m", blob, retries, "0"]

    def submit(self, task="t", resource=None, params=None, retries=0) -> str:
        row = self.row(task, resource, params, retries)
        assert self.b.submit([row]) == 1
        return row[0]

    def fetch(self, proc=P1, n=1, timeouts=(), default_ms=DEFAULT_MS):
        rows, problems = self.b.fetch(self.client, proc, n, default_ms, list(timeouts))
        jobs = [rows[i:i + FETCH_ROW] for i in range(0, len(rows), FETCH_ROW)]
        return jobs, problems

    def lease(self, proc=P1, **kw) -> tuple[str, int]:
        """Fetch exactly one job; (id, token)."""
        jobs, problems = self.fetch(proc, 1, **kw)
        assert problems == [] and len(jobs) == 1
        return jobs[0][0].decode(), jobs[0][1]

    # raw reads
    def rec(self, job_id) -> dict:
        return {k.decode(): v if k == b"params" else v.decode()
                for k, v in self.r.hgetall(self.k.job(job_id)).items()}

    def pending(self) -> list[str]:
        """Pending ids, next to run first; without the empty wake-up ids
        (include/delay.lua), which are no jobs (tests/test_time_scripts.py
        checks those)."""
        return [x.decode() for x in reversed(self.r.lrange(self.k.pending, 0, -1)) if x]

    def failed(self) -> list[str]:
        return [x.decode() for x in self.r.lrange(self.k.failed, 0, -1)]

    def waiting(self, resource) -> list[str]:
        return [x.decode() for x in self.r.lrange(self.k.wait(resource), 0, -1)]

    def locks(self) -> dict:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self.k.locks).items()}

    def held(self) -> dict:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self.k.held).items()}

    def counts(self) -> dict:
        raw = self.r.hgetall(self.k.counts)
        return {"active": int(raw.get(b"active", 0)), "waiting": int(raw.get(b"waiting", 0))}

    def owned(self, proc=P1) -> dict:
        return {k.decode(): int(v) for k, v in self.r.zrange(self.k.owned(proc), 0, -1, withscores=True)}

    def procs(self) -> dict:
        return {k.decode(): int(v) for k, v in self.r.zrange(self.k.procs, 0, -1, withscores=True)}

    def beats(self) -> dict:
        return {k.decode(): int(v) for k, v in self.r.hgetall(self.k.beats).items()}

    def now_ms(self) -> int:
        s, us = self.r.time()
        return s * 1000 + us // 1000

    def make_stale(self, proc=P1, silent_ms=60_000) -> None:
        """Pretend `proc` last beat `silent_ms` ago (in Redis' clock)."""
        beat = self.now_ms() - silent_ms
        self.r.hset(self.k.beats, proc, beat)
        self.r.zadd(self.k.procs, {proc: beat + 1})

    def snapshot(self) -> dict:
        """Every key of this queue with its value: to prove a call changed nothing."""
        out = {}
        for key in sorted(self.r.scan_iter(match=self.k.prefix + "*")):
            kind = self.r.type(key)
            if kind == b"hash":
                out[key] = self.r.hgetall(key)
            elif kind == b"list":
                out[key] = self.r.lrange(key, 0, -1)
            elif kind == b"zset":
                out[key] = self.r.zrange(key, 0, -1, withscores=True)
            else:
                out[key] = self.r.get(key)
        return out

    def close(self):
        self.b.close(self.client)


@pytest.fixture
def q(redis_url, namespace, r):
    queue = Q(redis_url, namespace, r)
    yield queue
    queue.close()


# -- submit ----------------------------------------------------------------------


def test_submit_writes_the_record_and_makes_a_free_job_runnable(q):
    row = q.row("resize", "img-1", {"w": 3}, retries=2)
    assert q.b.submit([row]) == 1
    job_id = row[0]
    rec = q.rec(job_id)
    assert rec["task"] == "resize" and rec["res"] == "img-1" and rec["enc"] == "m"
    assert rec["retries"] == "2" and rec["state"] == "pending"
    assert "attempts" not in rec  # at its default (0), a field is left out: fewer bytes a job
    assert msgpack.unpackb(q.r.hget(q.k.job(job_id), "params")) == {"w": 3}
    assert q.pending() == [job_id]
    assert q.locks() == {"img-1": job_id}
    assert q.counts() == {"active": 0, "waiting": 0}


def test_submit_without_a_resource_takes_no_lock_and_stores_no_resource_field(q):
    job_id = q.submit("t", None)
    assert "res" not in q.rec(job_id)
    assert q.locks() == {}
    assert q.pending() == [job_id]


def test_submit_parks_a_job_whose_resource_is_held_on_that_resource_wait_list(q):
    first = q.submit("t", "r")
    second = q.submit("t", "r")
    third = q.submit("t", "r")
    other = q.submit("t", "s")
    assert q.pending() == [first, other]
    assert q.waiting("r") == [second, third]
    assert q.rec(second)["state"] == "waiting"
    assert q.locks() == {"r": first, "s": other}
    assert q.counts()["waiting"] == 2


def test_submitting_the_same_row_twice_adds_one_job(q):
    row = q.row("t", "r")
    assert q.b.submit([row, row]) == 1
    assert q.b.submit([row]) == 0
    assert q.pending() == [row[0]]
    assert q.waiting("r") == []
    assert q.counts()["waiting"] == 0
    assert q.locks() == {"r": row[0]}


def test_a_bulk_submit_larger_than_one_script_batch_adds_every_job_in_order(q):
    rows = [q.row("t", None, {"i": i}) for i in range(1203)]
    assert q.b.submit(rows) == 1203
    assert q.pending() == [row[0] for row in rows]
    assert q.b.submit(rows) == 0


def test_a_submit_re_sent_after_its_job_ran_adds_nothing(q):
    """ChannelPool.execute sends a submit again, unchanged, when its
    connection broke before the reply; meanwhile an idle worker may have
    run the job and deleted its record. The call's nonce tells the re-send
    from a new submit."""
    row = q.row("t", "r")
    calls = q.b.submit_calls([row])
    assert q.b.run_batch(q.client, calls) == [[1, []]]
    job_id, token = q.lease(P1)
    assert q.b.complete(P1, [job_id, token]) == [1]
    before = q.snapshot()
    assert q.b.run_batch(q.client, calls) == [[0, []]]     # the re-send
    assert q.snapshot() == before
    assert q.pending() == [] and q.locks() == {} and q.counts() == {"active": 0, "waiting": 0}
    # A new submit of that id (no record any more) is a new job, not a re-send.
    assert q.b.submit([row]) == 1 and q.pending() == [job_id]


def test_a_submit_call_leaves_one_small_marker_that_outlives_any_re_send_of_it(q):
    """The re-send comes within the socket timeout (the break shows), a
    connect and a handshake: 2 x 10 s + 5 s with the default settings."""
    rows = [q.row("t") for _ in range(250)]
    assert q.b.submit(rows) == 250                          # 3 script calls
    markers = list(q.r.scan_iter(match=q.k.prefix + "sent:*"))
    assert len(markers) == 3
    for marker in markers:
        assert 20_000 < q.r.pttl(marker) <= 25_000
        assert q.r.memory_usage(marker) < 128


# -- fetch -----------------------------------------------------------------------


def test_fetch_leases_up_to_n_jobs_oldest_first_and_marks_them_active(q):
    ids = [q.submit("t", f"r{i}", {"i": i}, retries=1) for i in range(3)]
    jobs, problems = q.fetch(P1, 2)
    assert problems == []
    assert [j[0].decode() for j in jobs] == ids[:2]
    job = jobs[0]
    assert job[1] == 1                                   # token: the queue's first lease
    assert job[2] == b"t" and job[3] == b"r0" and job[4] == b"m"
    assert msgpack.unpackb(job[5]) == {"i": 0}
    assert job[6] == b"1" and job[7] == 1 and job[8] is None
    for job_id in ids[:2]:
        rec = q.rec(job_id)
        assert rec["state"] == "active" and rec["owner"] == P1
        assert rec["attempts"] == "1"
        assert int(rec["started"]) > 0
    assert [q.rec(job_id)["lease"] for job_id in ids[:2]] == ["1", "2"]  # one counter per queue
    assert q.pending() == [ids[2]]
    assert q.counts()["active"] == 2


def test_fetch_gives_each_lease_a_new_token_and_counts_the_attempt(q):
    job_id = q.submit("t", retries=3)
    _, token = q.lease(P1)
    assert q.b.fail(P1, [job_id, token, "boom", "0"]) == [2]
    _, token2 = q.lease(P2)
    assert token2 == token + 1
    rec = q.rec(job_id)
    assert rec["attempts"] == "2" and rec["owner"] == P2 and rec["lease"] == str(token2)


def test_fetch_records_ownership_with_the_task_timeout_or_the_default(q):
    known = q.submit("known")
    unknown = q.submit("other")
    q.fetch(P1, 2, timeouts=["known", 2500, "x", 7], default_ms=4000)
    assert q.owned(P1) == {known: 2500, unknown: 4000}
    beats = q.beats()
    assert set(beats) == {P1}
    assert q.procs() == {P1: beats[P1] + 2500}
    assert abs(beats[P1] - q.now_ms()) < 5000


def test_fetch_from_an_empty_queue_returns_nothing_and_registers_no_process(q):
    assert q.fetch(P1, 5) == ([], [])
    assert q.procs() == {} and q.beats() == {}
    assert q.counts()["active"] == 0


def test_each_submitted_job_wakes_one_waiting_process_whose_fetch_leases_it(q):
    waiters = {proc: q.b.script_channel() for proc in (P1, P2)}
    try:
        waits = {proc: gevent.spawn(q.b.wait_and_fetch, channel, 5, proc, 10, DEFAULT_MS, [])
                 for proc, channel in waiters.items()}
        gevent.sleep(0.2)  # both blocked in Redis
        first = q.submit()
        woken = gevent.wait(list(waits.values()), count=1, timeout=3)
        gevent.sleep(0.2)  # a second waiter, were it woken too, would be back by now
        assert len([w for w in waits.values() if w.ready()]) == 1
        [(winner, wait)] = [(proc, w) for proc, w in waits.items() if w in woken]
        rows, problems = wait.get()
        assert problems == [] and rows[0].decode() == first and len(rows) == FETCH_ROW
        assert q.owned(winner) == {first: DEFAULT_MS}
        second = q.submit()
        [(loser, wait)] = [(proc, w) for proc, w in waits.items() if proc != winner]
        rows, problems = wait.get(timeout=3)
        assert rows[0].decode() == second and q.owned(loser) == {second: DEFAULT_MS}
        assert not q.r.exists(q.k.handoff) and q.pending() == []
    finally:
        for channel in waiters.values():
            channel.disconnect()


def test_a_job_handed_to_a_waiter_that_died_before_its_fetch_is_leased_first_by_any_process(q):
    older, newer = q.submit(), q.submit()
    # What a waiter's BLMOVE does; its process died before the fetch behind it ran.
    q.r.lmove(q.k.pending, q.k.handoff, "RIGHT", "LEFT")
    assert q.pending() == [newer]
    assert q.b.stats()["pending"] == 2
    assert q.lease(P2)[0] == older
    assert q.lease(P2)[0] == newer
    assert not q.r.exists(q.k.handoff) and q.b.stats()["pending"] == 0


def test_fetch_drops_a_pending_id_without_a_record_and_reports_it(q):
    q.r.lpush(q.k.pending, "ghost")
    good = q.submit("t")
    jobs, problems = q.fetch(P1, 5)
    assert [j[0].decode() for j in jobs] == [good]
    assert len(problems) == 1 and b"ghost" in problems[0] and b"without a record" in problems[0]
    assert q.pending() == [] and q.failed() == []
    assert not q.r.exists(q.k.job("ghost"))
    assert q.counts()["active"] == 1


def test_fetch_moves_a_record_that_is_a_redis_string_to_the_failed_list_as_a_hash(q):
    q.r.set(q.k.job("str"), b"not a hash \xff")
    q.r.lpush(q.k.pending, "str")
    jobs, problems = q.fetch(P1, 5)
    assert jobs == []
    assert len(problems) == 1 and b"str" in problems[0] and b"string" in problems[0]
    assert q.failed() == ["str"]
    assert q.r.type(q.k.job("str")) == b"hash"
    assert q.r.hget(q.k.job("str"), "raw") == b"not a hash \xff"
    assert q.r.hget(q.k.job("str"), "state") == b"failed"
    assert b"string" in q.r.hget(q.k.job("str"), "error")
    assert q.counts()["active"] == 0 and q.procs() == {}


def test_fetch_moves_a_record_of_another_redis_type_to_the_failed_list(q):
    q.r.rpush(q.k.job("lst"), "a", "b")
    q.r.lpush(q.k.pending, "lst")
    jobs, problems = q.fetch(P1, 1)
    assert jobs == [] and len(problems) == 1 and b"list" in problems[0]
    assert q.failed() == ["lst"]
    assert q.r.hget(q.k.job("lst"), "raw") == b"<a Redis list>"


# -- a record that vanished while its job held a resource -------------------------
# (eviction, a manual DEL): the jobs of that resource must not wait forever.


def test_the_fetch_that_drops_a_pending_holder_without_a_record_passes_its_resource_on(q):
    holder = q.submit("t", "r")
    waiting = q.submit("t", "r")
    later = q.submit("t", "r")
    q.r.delete(q.k.job(holder))
    jobs, problems = q.fetch(P1, 5)
    assert [j[0].decode() for j in jobs] == [waiting]     # leased by this very fetch
    assert len(problems) == 1 and holder.encode() in problems[0]
    assert b"without a record" in problems[0] and b"resource r " in problems[0]
    assert q.locks() == {"r": waiting} and q.waiting("r") == [later]
    assert q.counts() == {"active": 1, "waiting": 1}


def test_a_job_of_a_resource_whose_holder_vanished_unnoticed_does_not_wait_for_it(q):
    """Nothing waited when the holder's record vanished, so nothing knew its
    resource: the first job to wait for it finds the holder gone."""
    holder = q.submit("t", "r")
    q.r.delete(q.k.job(holder))
    _, problems = q.fetch(P1, 5)
    assert len(problems) == 1 and holder.encode() in problems[0]
    job_id = q.submit("t", "r")
    assert q.locks() == {"r": job_id} and q.pending() == [job_id]
    assert q.waiting("r") == [] and q.counts()["waiting"] == 0
    assert q.rec(job_id)["state"] == "pending"


@pytest.mark.parametrize("finish", ["complete", "fail", "give_back"])
def test_a_finish_of_a_running_holder_whose_record_vanished_passes_its_resource_on(q, finish):
    holder = q.submit("t", "r")
    waiting = q.submit("t", "r")
    _, token = q.lease(P1)
    q.r.delete(q.k.job(holder))
    args = [holder, token, "boom", "0"] if finish == "fail" else [holder, token]
    assert getattr(q.b, finish)(P1, args) == [0]
    assert q.locks() == {"r": waiting} and q.pending() == [waiting]
    assert q.owned(P1) == {} and q.counts() == {"active": 0, "waiting": 0}


def test_a_stale_flush_that_finds_a_holder_without_a_record_passes_its_resource_on(q):
    holder = q.submit("t", "r")
    waiting = q.submit("t", "r")
    q.lease(P1, timeouts=["t", 1000])
    q.r.delete(q.k.job(holder))
    q.make_stale(P1)
    assert q.b.flush_stale(100) == []
    assert q.locks() == {"r": waiting} and q.pending() == [waiting]
    assert q.owned(P1) == {} and q.counts() == {"active": 0, "waiting": 0}


# -- complete --------------------------------------------------------------------


def test_complete_deletes_the_record_and_frees_the_lock_when_nobody_waits(q):
    job_id = q.submit("t", "r")
    _, token = q.lease(P1)
    assert q.b.complete(P1, [job_id, token]) == [1]
    assert not q.r.exists(q.k.job(job_id))
    assert q.locks() == {}
    assert not q.r.exists(q.k.wait("r"))
    assert q.owned(P1) == {}
    assert q.counts() == {"active": 0, "waiting": 0}


def test_complete_hands_the_resource_to_the_next_waiting_job_in_fifo_order(q):
    first = q.submit("t", "r")
    second = q.submit("t", "r")
    third = q.submit("t", "r")
    assert q.held() == {first: "r"}              # noted for the jobs waiting behind it
    _, token = q.lease(P1)
    assert q.b.complete(P1, [first, token]) == [1]
    assert q.locks() == {"r": second} and q.held() == {second: "r"}
    assert q.pending() == [second] and q.waiting("r") == [third]
    assert q.rec(second)["state"] == "pending"
    assert q.counts() == {"active": 0, "waiting": 1}
    _, token = q.lease(P1)
    assert q.b.complete(P1, [second, token]) == [1]
    assert q.locks() == {"r": third} and q.pending() == [third]
    assert q.held() == {}                         # nothing waits behind the last one
    _, token = q.lease(P1)
    assert q.b.complete(P1, [third, token]) == [1]
    assert q.locks() == {} and not q.r.exists(q.k.wait("r"))
    assert q.counts() == {"active": 0, "waiting": 0}


def test_complete_skips_a_waiting_job_whose_record_vanished(q):
    first = q.submit("t", "r")
    ghost = q.submit("t", "r")
    last = q.submit("t", "r")
    q.r.delete(q.k.job(ghost))
    _, token = q.lease(P1)
    assert q.b.complete(P1, [first, token]) == [1]
    assert q.locks() == {"r": last}
    assert q.pending() == [last]
    assert q.counts()["waiting"] == 0


def test_complete_with_a_wrong_token_returns_minus_one_and_changes_nothing(q):
    job_id = q.submit("t", "r")
    q.submit("t", "r")
    _, token = q.lease(P1)
    before = q.snapshot()
    assert q.b.complete(P1, [job_id, token + 1]) == [-1]
    assert q.b.complete(P2, [job_id, token]) == [-1]   # right token, wrong process
    assert q.snapshot() == before


def test_a_finish_of_a_record_that_is_no_job_hash_reports_it_gone_or_the_lease_lost(q):
    job_id = q.submit("t")
    _, token = q.lease(P1)
    q.r.delete(q.k.job(job_id))
    q.r.set(q.k.job(job_id), "junk")                   # another type: no record
    assert q.b.complete(P1, [job_id, token]) == [0]
    assert q.r.get(q.k.job(job_id)) == b"junk" and q.owned(P1) == {}
    other = q.submit("t")
    _, token = q.lease(P1)
    q.r.hdel(q.k.job(other), "state")                  # a hash, but not an active one
    assert q.b.complete(P1, [other, token]) == [-1]
    assert q.owned(P1) == {other: DEFAULT_MS}


def test_completing_a_job_twice_returns_the_first_outcome_from_its_receipt_and_changes_nothing(q):
    job_id = q.submit("t", "r")
    waiting = q.submit("t", "r")
    _, token = q.lease(P1)
    assert q.b.complete(P1, [job_id, token]) == [1]
    before = q.snapshot()
    # a re-send after a broken connection: its first send had landed
    assert q.b.complete(P1, [job_id, token]) == [1]
    assert q.snapshot() == before
    assert q.locks() == {"r": waiting}
    # once the committer saw the reply it drops the receipts: now the record
    # is simply gone
    q.b.drop_receipts(P1)
    assert q.b.complete(P1, [job_id, token]) == [0]
    assert q.locks() == {"r": waiting}


def test_a_resent_finish_whose_lease_a_flush_took_and_another_run_finished_reports_the_lost_lease(q):
    """The known gap of the committer's re-send: without receipts, a re-send
    that finds no record cannot tell its own first send from another run."""
    job_id = q.submit("t", "r", retries=1)
    _, token = q.lease(P1, timeouts=["t", 1000])
    q.make_stale(P1)
    assert len(q.b.flush_stale(100)) == 9
    _, token2 = q.lease(P2)
    assert q.b.complete(P2, [job_id, token2]) == [1]
    assert q.b.complete(P1, [job_id, token]) == [0]
    assert q.b.fail(P1, [job_id, token, "late", "0"]) == [0]
    assert q.b.give_back(P1, [job_id, token]) == [0]


def test_a_resent_fail_and_give_back_return_their_first_outcome(q):
    retried = q.submit("t", "a", retries=1)
    failed = q.submit("t", "b", retries=0)
    given = q.submit("t", "c")
    leases = dict(q.lease(P1) for _ in range(3))
    groups = [retried, leases[retried], "boom", "0", failed, leases[failed], "bad", "0"]
    assert q.b.fail(P1, groups) == [2, 1]
    assert q.b.give_back(P1, [given, leases[given]]) == [1]
    before = q.snapshot()
    assert q.b.fail(P1, groups) == [2, 1]
    assert q.b.give_back(P1, [given, leases[given]]) == [1]
    assert q.snapshot() == before
    assert q.failed() == [failed] and q.pending() == [given, retried]


def test_a_finish_call_that_drops_receipts_drops_the_earlier_ones_and_keeps_its_own(q):
    a, b = q.submit("t"), q.submit("t")
    (_, ta), (_, tb) = q.lease(P1), q.lease(P1)
    receipts = q.k.receipts(P1)
    assert q.b.complete(P1, [a, ta]) == [1]
    assert q.r.hkeys(receipts) == [f"{a} {ta}".encode()]
    assert 0 < q.r.pttl(receipts) <= 86_400_000
    assert q.b._run(q.r, *q.b.complete_call(P1, [b, tb], drop_receipts=True)) == [1]
    assert q.r.hkeys(receipts) == [f"{b} {tb}".encode()]


def test_a_flush_that_declares_a_process_dead_deletes_its_receipts(q):
    done = q.submit("t")
    stuck = q.submit("t", retries=1)
    _, token = q.lease(P1)
    assert q.b.complete(P1, [done, token]) == [1]
    q.lease(P1, timeouts=["t", 1000])
    assert q.r.exists(q.k.receipts(P1))
    q.make_stale(P1)
    assert len(q.b.flush_stale(100)) == 9
    assert not q.r.exists(q.k.receipts(P1))
    assert q.rec(stuck)["state"] == "pending"


def test_complete_finishes_several_jobs_in_one_call_with_a_code_each(q):
    a = q.submit("t", "ra")
    b = q.submit("t", "rb")
    jobs, _ = q.fetch(P1, 2)
    tokens = {j[0].decode(): j[1] for j in jobs}
    assert q.b.complete(P1, [a, tokens[a], "nope", 1, b, tokens[b] + 5]) == [1, 0, -1]
    assert q.locks() == {"rb": b}
    assert q.counts()["active"] == 1


# -- fail ------------------------------------------------------------------------


def test_fail_with_retries_left_requeues_the_job_at_the_back_and_keeps_its_lock(q):
    job_id = q.submit("t", "r", retries=2)
    waiting = q.submit("t", "r")
    other = q.submit("t")
    _, token = q.lease(P1)
    assert q.b.fail(P1, [job_id, token, "Traceback: boom", "0"]) == [2]
    rec = q.rec(job_id)
    assert rec["state"] == "pending" and rec["retries"] == "1" and rec["error"] == "Traceback: boom"
    assert q.pending() == [other, job_id]
    assert q.locks() == {"r": job_id}
    assert q.waiting("r") == [waiting]
    assert q.owned(P1) == {} and q.failed() == []
    assert q.counts() == {"active": 0, "waiting": 1}


def test_fail_with_no_retries_left_moves_the_job_to_the_failed_list_and_hands_on_the_lock(q):
    job_id = q.submit("t", "r", retries=0)
    waiting = q.submit("t", "r")
    _, token = q.lease(P1)
    assert q.b.fail(P1, [job_id, token, "boom", "0"]) == [1]
    rec = q.rec(job_id)
    assert rec["state"] == "failed" and rec["error"] == "boom" and rec.get("retries", "0") == "0"
    assert q.failed() == [job_id]
    assert q.locks() == {"r": waiting} and q.pending() == [waiting]
    assert q.counts() == {"active": 0, "waiting": 0}


def test_a_final_fail_ignores_the_retries_left(q):
    job_id = q.submit("t", "r", retries=5)
    _, token = q.lease(P1)
    assert q.b.fail(P1, [job_id, token, "undecodable", "1"]) == [1]
    assert q.failed() == [job_id]
    assert q.rec(job_id)["retries"] == "5"
    assert q.pending() == [] and q.locks() == {}


def test_fail_with_a_wrong_token_returns_minus_one_and_changes_nothing(q):
    job_id = q.submit("t", "r", retries=1)
    _, token = q.lease(P1)
    before = q.snapshot()
    assert q.b.fail(P1, [job_id, token - 1, "x", "0"]) == [-1]
    assert q.b.fail(P1, ["missing", 1, "x", "0"]) == [0]
    assert q.snapshot() == before


# -- heartbeat -------------------------------------------------------------------


def test_heartbeat_sets_the_process_deadline_to_its_beat_plus_the_smallest_owned_timeout(q):
    q.submit("slow")
    q.submit("fast")
    q.fetch(P1, 2, timeouts=["slow", 9000, "fast", 1500])
    q.r.hset(q.k.beats, P1, 1)
    q.r.zadd(q.k.procs, {P1: 2})
    held, now, cancels = q.b.heartbeat(P1)
    assert held == 2 and cancels == []
    assert abs(now - q.now_ms()) < 5000
    assert q.beats() == {P1: now}
    assert q.procs() == {P1: now + 1500}


def test_heartbeat_registers_an_idle_process_keeps_it_while_it_beats_and_drops_it_when_leaving(q):
    q.b.heartbeat(P1)  # not registered yet: the registry is left alone
    assert q.r.hgetall(q.k.workers) == {} and q.r.zrange(q.k.alive, 0, -1) == []
    q.b.registration = '{"role": "worker", "capacity": 3}'
    _held, first, _cancels = q.b.heartbeat(P1)
    assert q.r.hgetall(q.k.workers) == {P1.encode(): b'{"role": "worker", "capacity": 3}'}
    assert q.r.zrange(q.k.alive, 0, -1, withscores=True) == [(P1.encode(), first)]
    q.r.hset(q.k.workers, P1, "kept")  # written once, not on every beat
    gevent.sleep(0.01)
    _held, later, _cancels = q.b.heartbeat(P1)
    assert q.r.zscore(q.k.alive, P1) == later > first
    assert q.r.hget(q.k.workers, P1) == b"kept"

    q.b.heartbeat(P1, leaving=True)

    assert q.r.hgetall(q.k.workers) == {} and q.r.zrange(q.k.alive, 0, -1) == []


def test_heartbeat_prunes_processes_silent_for_longer_than_the_window_a_few_per_call(q):
    from greenq.config import PROCESS_GONE_AFTER

    now = q.now_ms()
    silent = {f"dead:{n}": now - PROCESS_GONE_AFTER * 1000 - 1000 - n for n in range(15)}
    recent = {"quiet:1": now - PROCESS_GONE_AFTER * 1000 + 2000}
    q.r.zadd(q.k.alive, {**silent, **recent})
    q.r.hset(q.k.workers, mapping={proc: "{}" for proc in [*silent, *recent]})

    q.b.heartbeat(P1)
    assert q.r.zcard(q.k.alive) == 16 - 10 and q.r.hlen(q.k.workers) == 16 - 10
    q.b.heartbeat(P2)

    assert q.r.zrange(q.k.alive, 0, -1) == [b"quiet:1"]
    assert q.r.hkeys(q.k.workers) == [b"quiet:1"]


def test_heartbeat_of_a_process_that_owns_nothing_forgets_it(q):
    job_id = q.submit("t")
    _, token = q.lease(P1)
    assert P1 in q.procs() and P1 in q.beats()
    assert q.b.complete(P1, [job_id, token]) == [1]
    held, _now, _cancels = q.b.heartbeat(P1)
    assert held == 0
    assert q.procs() == {} and q.beats() == {}
    held, _now, _cancels = q.b.heartbeat(P2)   # never owned anything
    assert held == 0 and q.procs() == {} and q.beats() == {}


# -- flush_stale -----------------------------------------------------------------


def test_flush_stale_retries_a_silent_process_job_keeping_its_resource(q):
    job_id = q.submit("t", "r", retries=1, params={"x": 1})
    waiting = q.submit("t", "r")
    _, token = q.lease(P1, timeouts=["t", 1000])
    q.make_stale(P1, silent_ms=5000)
    rows = q.b.flush_stale(100)
    assert len(rows) == 9
    assert rows[0].decode() == job_id and rows[1] == b"retry"
    assert rows[2] == b"t" and rows[3] == b"r" and msgpack.unpackb(rows[5]) == {"x": 1}
    assert rows[6] == 0 and int(rows[7]) == 1
    assert b"stale" in rows[8] and b"heartbeat" in rows[8]
    rec = q.rec(job_id)
    assert rec["state"] == "pending" and rec["retries"] == "0" and "stale" in rec["error"]
    assert q.pending() == [job_id]
    assert q.locks() == {"r": job_id} and q.waiting("r") == [waiting]
    assert q.owned(P1) == {} and q.procs() == {} and q.beats() == {}
    assert q.counts() == {"active": 0, "waiting": 1}


def test_flush_stale_fails_a_job_without_retries_and_releases_its_resource_to_the_next(q):
    job_id = q.submit("t", "r", retries=0)
    waiting = q.submit("t", "r")
    q.lease(P1, timeouts=["t", 1000])
    q.make_stale(P1)
    rows = q.b.flush_stale(100)
    assert rows[0].decode() == job_id and rows[1] == b"fail"
    assert q.failed() == [job_id]
    assert q.rec(job_id)["state"] == "failed"
    assert "stale" in q.rec(job_id)["error"]
    assert q.locks() == {"r": waiting} and q.pending() == [waiting]
    assert q.rec(waiting)["state"] == "pending"
    assert q.counts() == {"active": 0, "waiting": 0}


def test_flush_stale_reclaims_a_job_once_its_real_timeout_passes_on_the_redis_clock(q):
    job_id = q.submit("t", retries=1)
    q.lease(P1, timeouts=["t", 200])
    assert q.b.flush_stale(100) == []
    gevent.sleep(0.35)
    rows = q.b.flush_stale(100)
    assert rows[0].decode() == job_id and rows[1] == b"retry"
    assert q.pending() == [job_id]


def test_flush_stale_leaves_a_process_that_keeps_heartbeating_alone(q):
    job_id = q.submit("t", "r")
    q.lease(P1, timeouts=["t", 300])
    for _ in range(4):
        gevent.sleep(0.1)
        q.b.heartbeat(P1)
        assert q.b.flush_stale(100) == []
    assert q.rec(job_id)["state"] == "active"
    assert q.owned(P1) == {job_id: 300}
    assert q.locks() == {"r": job_id}


def test_flush_stale_takes_only_the_jobs_whose_own_timeout_passed(q):
    short = q.submit("short")
    long_ = q.submit("long")
    q.fetch(P1, 2, timeouts=["short", 1000, "long", 60_000])
    q.make_stale(P1, silent_ms=3000)
    rows = q.b.flush_stale(100)
    assert [rows[i].decode() for i in range(0, len(rows), 9)] == [short]
    assert q.owned(P1) == {long_: 60_000}
    beat = q.beats()[P1]
    assert q.procs() == {P1: beat + 60_000}   # the next deadline is the long job's
    assert q.rec(long_)["state"] == "active"


def test_flush_stale_does_at_most_limit_jobs_per_call(q):
    ids = [q.submit("t") for _ in range(3)]
    q.fetch(P1, 3, timeouts=["t", 1000])
    q.make_stale(P1)
    first = q.b.flush_stale(2)
    assert len(first) == 2 * 9
    assert len(q.failed()) == 2 and len(q.owned(P1)) == 1
    assert q.counts()["active"] == 1
    second = q.b.flush_stale(2)
    assert len(second) == 9
    assert sorted(q.failed()) == sorted(ids)
    assert q.counts()["active"] == 0
    assert q.b.flush_stale(2) == []


def test_flush_stale_limit_spans_several_processes(q):
    for _ in range(2):
        q.submit("t")
    q.lease(P1, timeouts=["t", 1000])
    q.lease(P2, timeouts=["t", 1000])
    q.make_stale(P1)
    q.make_stale(P2)
    assert len(q.b.flush_stale(1)) == 9
    assert len(q.b.flush_stale(1)) == 9
    assert q.b.flush_stale(1) == []
    assert len(q.failed()) == 2 and q.procs() == {}


def test_a_note_left_under_the_current_lease_is_the_error_the_reclaiming_flush_records(q):
    job_id = q.submit("t", "r", retries=1)
    _, token = q.lease(P1, timeouts=["t", 1000])
    before = q.snapshot()
    assert q.b.note(P2, [job_id, token, "not P2's job"]) == [-1]
    assert q.b.note(P1, ["missing", 1, "no such job"]) == [0]
    assert q.snapshot() == before
    assert q.b.note(P1, [job_id, token, "TimeLimitExceeded: ran too long"]) == [1]
    q.make_stale(P1)
    rows = q.b.flush_stale(100)
    assert rows[1] == b"retry" and rows[8] == b"TimeLimitExceeded: ran too long"
    assert q.rec(job_id)["error"] == "TimeLimitExceeded: ran too long"
    # The note held for that lease only: the next run's flush says "stale".
    q.lease(P2, timeouts=["t", 1000])
    q.make_stale(P2)
    rows = q.b.flush_stale(100)
    assert rows[1] == b"fail" and rows[8].startswith(b"stale: process " + P2.encode())


def test_after_a_flush_the_old_lease_holders_complete_returns_minus_one_and_changes_nothing(q):
    job_id = q.submit("t", "r", retries=1)
    waiting = q.submit("t", "r")
    _, token = q.lease(P1, timeouts=["t", 1000])
    q.make_stale(P1)
    q.b.flush_stale(100)
    before = q.snapshot()
    assert q.b.complete(P1, [job_id, token]) == [-1]
    assert q.b.fail(P1, [job_id, token, "late", "0"]) == [-1]
    assert q.b.give_back(P1, [job_id, token]) == [-1]
    assert q.snapshot() == before
    # the rerun holds a fresh lease; the old one stays fenced
    _, token2 = q.lease(P2)
    assert token2 == token + 1
    assert q.b.complete(P1, [job_id, token]) == [-1]
    assert q.b.complete(P2, [job_id, token2]) == [1]
    assert q.locks() == {"r": waiting}


def test_after_a_flush_that_failed_the_job_a_late_complete_does_not_release_twice(q):
    job_id = q.submit("t", "r", retries=0)
    waiting = q.submit("t", "r")
    third = q.submit("t", "r")
    _, token = q.lease(P1, timeouts=["t", 1000])
    q.make_stale(P1)
    q.b.flush_stale(100)
    assert q.locks() == {"r": waiting}
    before = q.snapshot()
    assert q.b.complete(P1, [job_id, token]) == [-1]
    assert q.snapshot() == before
    assert q.waiting("r") == [third]


# -- reclaim_process ---------------------------------------------------------------

DEAD = "dead: process host:1:p1 (worker child 1, pid 1) died (signal 9) running the job"


def test_reclaim_process_retries_or_fails_every_job_of_a_process_whatever_its_heartbeat(q):
    retried = q.submit("t", "r", retries=1, params={"x": 1})
    behind_r = q.submit("t", "r")
    failed = q.submit("t", "s")
    behind_s = q.submit("t", "s")
    loose = q.submit("t", retries=2)
    other = q.submit("t")
    q.fetch(P1, 3, timeouts=["t", 60_000])
    q.lease(P2, timeouts=["t", 60_000])
    q.b.heartbeat(P1)                      # alive as far as Redis can tell
    rows, left = q.b.reclaim_process(P1, DEAD, 100)
    assert left == 0
    out = {rows[i].decode(): rows[i:i + 9] for i in range(0, len(rows), 9)}
    assert set(out) == {retried, failed, loose}
    assert out[retried][1] == b"retry" and out[retried][6] == 0 and out[retried][8] == DEAD.encode()
    assert msgpack.unpackb(out[retried][5]) == {"x": 1} and int(out[retried][7]) == 1
    assert out[failed][1] == b"fail" and out[loose][1] == b"retry" and out[loose][6] == 1
    assert q.rec(retried)["state"] == "pending" and q.rec(retried)["error"] == DEAD
    assert q.rec(failed)["state"] == "failed" and q.failed() == [failed]
    # r stays with the retried job; s went to the job behind it
    assert q.locks() == {"r": retried, "s": behind_s} and q.waiting("r") == [behind_r]
    assert sorted(q.pending()) == sorted([retried, loose, behind_s])
    assert q.owned(P1) == {} and P1 not in q.procs() and P1 not in q.beats()
    assert q.owned(P2) == {other: 60_000} and q.rec(other)["state"] == "active"
    assert q.counts() == {"active": 1, "waiting": 1}


def test_reclaim_process_leaves_other_processes_and_deletes_the_dead_ones_receipts(q):
    done, mine, theirs = q.submit("t"), q.submit("t"), q.submit("t")
    _, token = q.lease(P1)
    assert q.b.complete(P1, [done, token]) == [1]
    assert q.r.exists(q.k.receipts(P1))
    q.lease(P1)
    _, their_token = q.lease(P2)
    rows, left = q.b.reclaim_process(P1, DEAD, 100)
    assert [rows[0].decode(), rows[1]] == [mine, b"fail"] and left == 0
    assert not q.r.exists(q.k.receipts(P1))
    assert q.owned(P2) == {theirs: DEFAULT_MS} and q.rec(theirs)["state"] == "active"
    assert q.b.complete(P2, [theirs, their_token]) == [1]


def test_reclaim_process_does_at_most_limit_jobs_per_call_and_says_how_many_are_left(q):
    ids = [q.submit("t") for _ in range(3)]
    q.fetch(P1, 3)
    rows, left = q.b.reclaim_process(P1, DEAD, 2)
    assert len(rows) == 2 * 9 and left == 1
    assert q.counts()["active"] == 1 and P1 in q.procs()
    rows, left = q.b.reclaim_process(P1, DEAD, 2)
    assert len(rows) == 9 and left == 0
    assert sorted(q.failed()) == sorted(ids) and q.procs() == {}
    assert q.b.reclaim_process(P1, DEAD, 2) == ([], 0)


def test_after_a_reclaim_the_dead_runs_late_finishes_return_minus_one_and_change_nothing(q):
    job_id = q.submit("t", "r", retries=1)
    waiting = q.submit("t", "r")
    _, token = q.lease(P1)
    q.b.reclaim_process(P1, DEAD, 100)
    before = q.snapshot()
    assert q.b.complete(P1, [job_id, token]) == [-1]
    assert q.b.fail(P1, [job_id, token, "late", "0"]) == [-1]
    assert q.b.give_back(P1, [job_id, token]) == [-1]
    assert q.snapshot() == before
    _, token2 = q.lease(P2)
    assert q.b.complete(P1, [job_id, token]) == [-1]
    assert q.b.complete(P2, [job_id, token2]) == [1]
    assert q.locks() == {"r": waiting}


def test_a_note_left_for_the_lease_is_the_error_a_reclaim_records(q):
    job_id = q.submit("t")
    _, token = q.lease(P1)
    assert q.b.note(P1, [job_id, token, "TimeLimitExceeded: ran too long"]) == [1]
    rows, _ = q.b.reclaim_process(P1, DEAD, 100)
    assert rows[8] == b"TimeLimitExceeded: ran too long"
    assert q.rec(job_id)["error"] == "TimeLimitExceeded: ran too long"


def test_reclaim_process_forgets_a_job_whose_record_vanished_and_passes_its_resource_on(q):
    gone = q.submit("t", "r")
    waiting = q.submit("t", "r")
    q.lease(P1)
    q.r.delete(q.k.job(gone))
    assert q.b.reclaim_process(P1, DEAD, 100) == ([], 0)
    assert q.locks() == {"r": waiting} and q.pending() == [waiting]
    assert q.counts() == {"active": 0, "waiting": 0} and q.owned(P1) == {}


# -- give_back -------------------------------------------------------------------


def test_give_back_puts_the_job_at_the_head_of_pending_uncounted_and_keeps_its_lock(q):
    job_id = q.submit("t", "r")
    later = q.submit("t")
    waiting = q.submit("t", "r")
    _, token = q.lease(P1)
    assert q.rec(job_id)["attempts"] == "1"
    assert q.b.give_back(P1, [job_id, token]) == [1]
    rec = q.rec(job_id)
    assert rec["state"] == "pending" and rec["attempts"] == "0"
    assert q.pending() == [job_id, later]
    assert q.locks() == {"r": job_id} and q.waiting("r") == [waiting]
    assert q.owned(P1) == {} and q.counts() == {"active": 0, "waiting": 1}
    again, token2 = q.lease(P2)
    assert again == job_id and token2 == token + 1
    assert q.rec(job_id)["attempts"] == "1"


def test_give_back_with_a_wrong_token_changes_nothing(q):
    job_id = q.submit("t")
    _, token = q.lease(P1)
    before = q.snapshot()
    assert q.b.give_back(P1, [job_id, token + 1]) == [-1]
    assert q.b.give_back(P2, [job_id, token]) == [-1]
    assert q.snapshot() == before


# -- give_back_unknown, and fetch promoting delayed jobs ---------------------------------

GRACE_MS = 60_000
WHY = "UnknownTaskError: job names task 'new', no worker took it within the grace"


def delayed(q) -> dict:
    return {k.decode(): int(v) for k, v in q.r.zrange(q.k.delayed, 0, -1, withscores=True)}


def come_due(q, job_id) -> None:
    """Pretend the job's back-off has passed (in Redis' clock)."""
    q.r.zadd(q.k.delayed, {job_id: q.now_ms() - 1})


def test_give_back_unknown_delays_the_job_uncounted_keeping_its_resource_and_place(q):
    job_id = q.submit("new", "r", retries=2)
    waiting = q.submit("t", "r")
    _, token = q.lease(P1)
    before = q.now_ms()
    assert q.b.give_back_unknown(P1, [job_id, token, WHY], GRACE_MS) == [3]
    rec = q.rec(job_id)
    assert rec["state"] == "scheduled" and rec["attempts"] == "0" and rec["retries"] == "2"
    assert before <= int(rec["unknown_since"]) <= q.now_ms()
    assert "error" not in rec
    # first back-off: 1 s, by Redis' clock
    assert before + 1000 <= delayed(q)[job_id] <= q.now_ms() + 1000
    assert q.locks() == {"r": job_id} and q.waiting("r") == [waiting] and q.pending() == []
    assert q.owned(P1) == {} and q.counts() == {"active": 0, "waiting": 1}
    assert q.b.stats()["scheduled"] == 1


def test_fetch_leases_a_delayed_job_only_once_it_came_due_then_from_the_back_of_pending(q):
    job_id = q.submit("new")
    _, token = q.lease(P1)
    q.b.give_back_unknown(P1, [job_id, token, WHY], GRACE_MS)
    assert q.fetch(P2) == ([], [])       # not due yet
    other = q.submit("t")
    come_due(q, job_id)
    jobs, problems = q.fetch(P2, 1)
    assert problems == [] and [job[0].decode() for job in jobs] == [other]
    assert delayed(q) == {} and q.pending() == [job_id] and q.rec(job_id)["state"] == "pending"
    again, token2 = q.lease(P2)
    assert again == job_id and token2 > token and q.rec(job_id)["attempts"] == "1"


def test_an_idle_waiting_fetch_leases_a_delayed_job_that_came_due_when_its_wait_ends(q):
    job_id = q.submit("new")
    _, token = q.lease(P1)
    q.b.give_back_unknown(P1, [job_id, token, WHY], GRACE_MS)
    come_due(q, job_id)
    rows, problems = q.b.wait_and_fetch(q.client, 0.05, P2, 1, DEFAULT_MS, ["new", 1000])
    assert problems == [] and rows[0].decode() == job_id


def test_a_fetch_that_does_not_know_a_promoted_jobs_task_passes_it_over_once(q):
    job_id = q.submit("new")
    _, token = q.lease(P1)
    q.b.give_back_unknown(P1, [job_id, token, WHY], GRACE_MS)
    come_due(q, job_id)
    # P1 (without the task) promotes it but leaves it first in line for
    # another process: one blocked in BLMOVE gets it before P1's next call.
    assert q.fetch(P1, 5) == ([], [])
    assert delayed(q) == {} and q.pending() == [job_id] and q.rec(job_id)["state"] == "pending"
    # Found in pending, not just promoted: leased even here (give_back_unknown
    # then backs it off again), so no process fetches in a loop.
    again, _ = q.lease(P1)
    assert again == job_id


def test_a_job_passed_over_goes_first_in_line_and_the_fetch_takes_the_rest(q):
    job_id = q.submit("new")
    _, token = q.lease(P1)
    q.b.give_back_unknown(P1, [job_id, token, WHY], GRACE_MS)
    come_due(q, job_id)
    known = q.submit("t")
    jobs, problems = q.fetch(P1, 5, timeouts=["t", 1000])
    assert problems == [] and [job[0].decode() for job in jobs] == [known]
    later = q.submit("t")
    assert q.pending() == [job_id, later]
    jobs, _ = q.fetch(P2, 5, timeouts=["new", 1000, "t", 1000])
    assert [job[0].decode() for job in jobs] == [job_id, later]


def test_fetch_promotes_at_most_its_batch_of_due_delayed_jobs_per_call(q):
    from greenq import config

    ids = [q.submit("new") for _ in range(config.PROMOTE_BATCH + 5)]
    jobs, _ = q.fetch(P1, len(ids))
    groups = [x for job in jobs for x in (job[0], job[1], WHY)]
    assert q.b.give_back_unknown(P1, groups, GRACE_MS) == [3] * len(ids)
    for job_id in ids:
        come_due(q, job_id)
    q.fetch(P2, 1, timeouts=["new", 1000])
    assert len(delayed(q)) == 5 and len(q.pending()) == config.PROMOTE_BATCH - 1


def test_the_back_off_grows_with_the_time_waited_and_the_job_fails_once_the_grace_is_over(q):
    job_id = q.submit("new", "r", retries=3)
    waiting = q.submit("t", "r")
    _, token = q.lease(P1)
    q.b.give_back_unknown(P1, [job_id, token, WHY], 3000)
    since = int(q.rec(job_id)["unknown_since"])
    # 2.5 s later (moved back in the record): the back-off is the 0.5 s left of the grace
    q.r.hset(q.k.job(job_id), "unknown_since", since - 2500)
    come_due(q, job_id)
    assert q.fetch(P2) == ([], [])   # promoted, passed over once: P2 does not know it either
    _, token = q.lease(P2)
    now = q.now_ms()
    assert q.b.give_back_unknown(P2, [job_id, token, WHY], 3000) == [3]
    assert now + 400 <= delayed(q)[job_id] <= q.now_ms() + 500
    assert q.rec(job_id)["unknown_since"] == str(since - 2500)   # the same series
    # past the grace: failed for good, uncounted, its retries kept, its resource passed on
    q.r.hset(q.k.job(job_id), "unknown_since", since - 3000)
    come_due(q, job_id)
    assert q.fetch(P1) == ([], [])
    _, token = q.lease(P1)
    assert q.b.give_back_unknown(P1, [job_id, token, WHY], 3000) == [1]
    rec = q.rec(job_id)
    assert (rec["state"], rec["error"], rec["attempts"], rec["retries"]) == \
        ("failed", WHY, "0", "3")
    assert "unknown_since" not in rec and "unknown_lease" not in rec
    assert q.failed() == [job_id] and delayed(q) == {}
    assert q.locks() == {"r": waiting} and q.pending() == [waiting]
    assert q.counts() == {"active": 0, "waiting": 0}


def test_a_run_by_a_worker_that_knew_the_task_starts_a_new_grace(q):
    job_id = q.submit("new", retries=1)
    _, token = q.lease(P1)
    q.b.give_back_unknown(P1, [job_id, token, WHY], 3000)
    q.r.hset(q.k.job(job_id), "unknown_since", 1)   # long ago
    come_due(q, job_id)
    _, token = q.lease(P2, timeouts=["new", 1000])  # a worker that knows it: runs, fails
    assert q.b.fail(P2, [job_id, token, "boom", "0"]) == [2]
    _, token = q.lease(P1)                          # unknown again
    assert q.b.give_back_unknown(P1, [job_id, token, WHY], 3000) == [3]
    assert int(q.rec(job_id)["unknown_since"]) > q.now_ms() - 1000


def test_give_back_unknown_with_a_wrong_token_changes_nothing_and_a_resend_gets_its_first_code(q):
    job_id = q.submit("new")
    _, token = q.lease(P1)
    before = q.snapshot()
    assert q.b.give_back_unknown(P1, [job_id, token + 1, WHY], GRACE_MS) == [-1]
    assert q.b.give_back_unknown(P2, [job_id, token, WHY], GRACE_MS) == [-1]
    assert q.snapshot() == before
    assert q.b.give_back_unknown(P1, [job_id, token, WHY], GRACE_MS) == [3]
    assert q.b.give_back_unknown(P1, [job_id, token, WHY], GRACE_MS) == [3]
    assert len(delayed(q)) == 1 and q.counts()["active"] == 0


def test_a_delayed_job_whose_record_vanished_is_reported_by_the_fetch_that_promotes_it(q):
    job_id = q.submit("new", "r")
    waiting = q.submit("t", "r")
    _, token = q.lease(P1)
    q.b.give_back_unknown(P1, [job_id, token, WHY], GRACE_MS)
    q.r.delete(q.k.job(job_id))
    come_due(q, job_id)
    jobs, problems = q.fetch(P2, 2)
    assert len(problems) == 1 and job_id in problems[0].decode()
    assert [job[0].decode() for job in jobs] == [waiting]
    assert not q.r.exists(q.k.job(job_id)) and delayed(q) == {}


# -- retry_failed / delete_failed ------------------------------------------------


def _fail_for_good(q, job_id_expected, proc=P1):
    job_id, token = q.lease(proc)
    assert job_id == job_id_expected
    assert q.b.fail(proc, [job_id, token, "boom", "1"]) == [1]


def test_retry_failed_makes_a_failed_job_runnable_again(q):
    job_id = q.submit("t", "r")
    _fail_for_good(q, job_id)
    assert q.b.retry_failed(100) == 1
    rec = q.rec(job_id)
    assert rec["state"] == "pending" and "owner" not in rec and "started" not in rec
    assert q.failed() == [] and q.pending() == [job_id]
    assert q.locks() == {"r": job_id}


def test_a_retried_failed_job_whose_resource_is_held_waits_behind_the_holder(q):
    failed = q.submit("t", "r")
    _fail_for_good(q, failed)
    holder = q.submit("t", "r")
    assert q.b.retry_failed(100) == 1
    assert q.locks() == {"r": holder}
    assert q.waiting("r") == [failed]
    assert q.rec(failed)["state"] == "waiting"
    assert q.pending() == [holder]
    assert q.counts()["waiting"] == 1
    _, token = q.lease(P1)
    assert q.b.complete(P1, [holder, token]) == [1]
    assert q.locks() == {"r": failed} and q.pending() == [failed]
    assert q.counts()["waiting"] == 0


def test_retry_failed_is_bounded_by_its_limit_and_goes_oldest_first(q):
    ids = []
    for _ in range(3):
        job_id = q.submit("t")
        _fail_for_good(q, job_id)
        ids.append(job_id)
    assert q.failed() == ids
    assert q.b.retry_failed(2) == 2
    assert q.failed() == ids[2:]
    assert q.pending() == ids[:2]
    assert q.b.retry_failed(2) == 1
    assert q.b.retry_failed(2) == 0


def test_retry_failed_drops_a_failed_id_whose_record_is_gone(q):
    kept = q.submit("t")
    _fail_for_good(q, kept)
    q.r.rpush(q.k.failed, "vanished")
    assert q.b.retry_failed(100) == 1
    assert q.failed() == [] and q.pending() == [kept]
    assert not q.r.exists(q.k.job("vanished"))


def test_delete_failed_removes_the_records_and_empties_the_failed_list(q):
    ids = []
    for _ in range(3):
        job_id = q.submit("t")
        _fail_for_good(q, job_id)
        ids.append(job_id)
    assert q.b.delete_failed(2) == 2
    assert q.failed() == ids[2:]
    assert q.b.delete_failed(100) == 1
    assert q.b.delete_failed(100) == 0
    assert q.failed() == []
    for job_id in ids:
        assert not q.r.exists(q.k.job(job_id))


def test_the_queue_facade_drains_failed_jobs_past_one_script_batch(redis_url, namespace, r):
    queue = GreenQueue(redis_url=redis_url, namespace=namespace)
    k = queue.keys
    ids = [f"f{i}" for i in range(1500)]
    pipe = r.pipeline()
    for job_id in ids:
        pipe.hset(k.job(job_id), mapping={"task": "t", "enc": "m", "params": msgpack.packb(None),
                                          "retries": 0, "attempts": 1, "state": "failed"})
    pipe.rpush(k.failed, *ids)
    pipe.execute()
    assert queue.retry_failed_jobs() == 1500
    assert r.llen(k.pending) == 1500 and r.llen(k.failed) == 0
    r.delete(k.pending)
    r.rpush(k.failed, *ids)
    assert queue.delete_failed_jobs() == 1500
    assert not any(r.exists(k.job(job_id)) for job_id in ids[:50])
    queue.shutdown()


# -- includes ----------------------------------------------------------------------


def include_alone(q, names: list[str], call: str, keys=(), args=()):
    """Run include files on their own, with no script around them to lend
    them locals (Redis refuses a read of an undefined global), then `call`."""
    from greenq import scripts

    source = "\n".join(scripts._read(f"include/{name}.lua") for name in names) + "\n" + call
    return q.r.eval(source, len(keys), *keys, *args)


def test_each_lua_include_works_from_its_arguments_alone(q):
    k = q.k
    queue = ("{prefix = ARGV[1], pending = KEYS[1], locks = KEYS[2], counts = KEYS[3], "
             "held = KEYS[4]}")
    queue_keys = (k.pending, k.locks, k.counts, k.held)
    assert include_alone(q, ["now_ms"], "return now_ms()") > 0

    first, second = q.submit("t", "r"), q.submit("t", "r")
    assert include_alone(q, ["release"], f"release({queue}, 'r', ARGV[2]) return 1",
                         queue_keys, (k.prefix, first)) == 1
    assert q.locks() == {"r": second} and q.pending() == [first, second]
    third = q.row("t", "r")[0]
    q.r.hset(k.job(third), "task", "t")
    assert include_alone(q, ["release", "enqueue"],
                         f"enqueue({queue}, ARGV[2], ARGV[3], 'r') return 1",
                         queue_keys, (k.prefix, third, k.job(third))) == 1
    assert q.waiting("r") == [third] and q.rec(third)["state"] == "waiting"

    job_id, token = q.lease(P1, timeouts=["t", 1000])
    assert include_alone(q, ["check_lease"], "return {check_lease(KEYS[1], ARGV[1], ARGV[2])}",
                         (k.job(job_id),), (token, P1))[1] == 1
    # receipts: check, note and keep; a second check finds the receipt
    call = ("local r = open_receipts(ARGV[1], ARGV[2]) r.drop('0') "
            "local f, code = r.check(KEYS[1], ARGV[3], 'no-such-lease') "
            "r.note(ARGV[3], 'no-such-lease', 7) r.keep() "
            "local _, again = open_receipts(ARGV[1], ARGV[2])"
            ".check(KEYS[1], ARGV[3], 'no-such-lease') "
            "return {code, again}")
    assert include_alone(q, ["check_lease", "receipts"], call, (k.job(job_id),),
                         (k.prefix, P1, job_id)) == [-1, 7]

    assert include_alone(q, ["touch_process"],
                         "touch_process(KEYS[1], KEYS[2], ARGV[1], KEYS[3], 5) return 1",
                         (k.procs, k.beats, k.owned(P1)), (P1,)) == 1
    assert q.beats() == {P1: 5} and q.procs() == {P1: 1005}
    assert include_alone(q, ["observe_clock"], "return observe_clock(KEYS[1], 10000, 2000, 5000)",
                         (k.clock,)) == 0
    assert include_alone(q, ["observe_clock"], "return observe_clock(KEYS[1], 20000, 2000, 5000)",
                         (k.clock,)) == 25000

    reclaimed = q.submit("t", "r2", retries=1)
    q.fetch("host:3:p3", 10)
    out = include_alone(q, ["release", "backoff", "metrics", "reclaim"],
                        f"local out = {{}} local queue = {queue[:-1]}, failed = KEYS[5], "
                        "delayed = KEYS[6], policies = KEYS[7], now = 120000, "
                        "metrics = open_metrics(KEYS[8], KEYS[9], 120000)} "
                        "local moved = reclaim(queue, out, ARGV[2], ARGV[3], 'dead') "
                        "queue.metrics.flush() return {moved, out}",
                        (*queue_keys, k.failed, k.delayed, k.retry_policies, k.metrics,
                         k.history),
                        (k.prefix, "host:3:p3", reclaimed))
    assert out[0] == 1 and out[1][:2] == [reclaimed.encode(), b"retry"]
    assert q.rec(reclaimed)["state"] == "pending" and q.rec(reclaimed)["error"] == "dead"
    assert q.r.hget(k.metrics, "o\tretried\tt") == b"1"
    assert q.r.hmget(k.history, "m2", "r2") == [b"2", b"1"]   # minute 2 of the epoch, slot 2


# -- NOSCRIPT fallback -----------------------------------------------------------


def test_every_script_still_runs_after_script_flush(q):
    """Each call below is preceded by SCRIPT FLUSH, so each script is loaded
    fresh through the NOSCRIPT fallback."""
    def flushed():
        q.r.script_flush()
        assert not any(q.r.script_exists(*[s.sha for s in q.b.scripts.values()]))

    flushed()
    a = q.row("t", "r", retries=1)
    assert q.b.submit([a]) == 1
    b = q.submit("t", "r")
    flushed()
    (job,), _ = q.fetch(P1, 1, timeouts=["t", 1000])
    token = job[1]
    flushed()
    assert q.b.fail(P1, [a[0], token, "x", "0"]) == [2]
    _, token = q.lease(P1, timeouts=["t", 1000])
    flushed()
    assert q.b.give_back(P1, [a[0], token]) == [1]
    _, token = q.lease(P1, timeouts=["t", 1000])
    flushed()
    assert q.b.heartbeat(P1)[0] == 1
    q.make_stale(P1)
    flushed()
    assert len(q.b.flush_stale(10)) == 9          # a's last retry was spent: failed, b promoted
    assert q.failed() == [a[0]]
    _, token = q.lease(P1)
    flushed()
    assert q.b.complete(P1, [b, token]) == [1]
    flushed()
    assert q.b.retry_failed(10) == 1
    _fail_for_good(q, a[0])
    flushed()
    assert q.b.delete_failed(10) == 1
    flushed()
    assert q.b.reclaim_process(P1, "dead", 10) == ([], 0)
    c = q.submit("new")
    _, token = q.lease(P1)
    flushed()
    assert q.b.give_back_unknown(P1, [c, token, "x"], 0) == [1]
    assert q.b.delete_failed(10) == 1
    assert unfinished_records(q.r, q.k.prefix) == []
    assert q.locks() == {} and q.pending() == [] and q.failed() == []
    assert q.counts() == {"active": 0, "waiting": 0}


def test_a_pipelined_batch_of_scripts_still_runs_after_script_flush(q):
    job_id = q.submit("t", "r")
    _, token = q.lease(P1)
    q.r.script_flush()
    calls = [q.b.complete_call(P1, [job_id, token, "", ""]), q.b.heartbeat_call(P1),
             q.b.flush_stale_call(10)]
    codes, (held, _now, _cancels), flushed = q.b.run_batch(q.client, calls)
    assert codes == [1] and held == 0 and flushed == []
    assert unfinished_records(q.r, q.k.prefix) == []
    assert q.locks() == {} and q.procs() == {} and q.beats() == {}
