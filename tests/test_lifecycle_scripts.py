"""The life cycle in the scripts themselves (issue 13): ended records kept
for result_ttl, cancel in every state and every finish that meets it,
coalescing and its re-send, one lease counter per queue."""

from __future__ import annotations

import msgpack
import pytest

from test_scripts import P1, P2, Q

KEEP_S = 60


@pytest.fixture
def q(redis_url, namespace, r):
    queue = Q(redis_url, namespace, r, result_ttl=KEEP_S)
    yield queue
    queue.close()


def kept(q, job_id) -> bool:
    return 0 < q.r.pttl(q.k.job(job_id)) <= KEEP_S * 1000


def test_complete_keeps_the_record_succeeded_with_its_result_for_result_ttl(q):
    job_id = q.submit("t", "r")
    _, token = q.lease(P1)
    assert q.b.run_batch(q.client, [q.b.complete_call(P1, [job_id, token, "j", b"[1,2]"])]) == [[1]]
    rec = q.rec(job_id)
    assert rec["state"] == "succeeded" and rec["result"] == "[1,2]" and rec["renc"] == "j"
    assert int(rec["ended"]) > 0 and kept(q, job_id)
    assert q.locks() == {} and q.counts() == {"active": 0, "waiting": 0}


def test_a_failed_record_never_expires(q):
    job_id = q.submit("t")
    _, token = q.lease(P1)
    assert q.b.fail(P1, [job_id, token, "boom", "0"]) == [1]
    assert q.rec(job_id)["state"] == "failed" and q.r.pttl(q.k.job(job_id)) == -1


@pytest.mark.parametrize("where", ["pending", "handoff"])
def test_a_cancelled_pending_id_stays_in_its_list_and_the_fetch_skips_and_buries_it(q, where):
    first, second = q.submit("t"), q.submit("t")
    if where == "handoff":
        q.r.lmove(q.k.pending, q.k.handoff, "RIGHT", "LEFT")   # what an idle fetcher's wait does
    assert q.b.cancel(first) == 1
    assert q.rec(first)["state"] == "cancelled" and q.r.pttl(q.k.job(first)) == -1
    assert q.b.stats()["pending"] == 1                  # the marked id does not count
    jobs, problems = q.fetch(P1, 5)
    assert problems == [] and [job[0].decode() for job in jobs] == [second]
    assert kept(q, first) and q.b.stats()["pending"] == 0
    assert int(q.r.hget(q.k.counts, "skipped")) == 0


def test_a_cancelled_waiting_id_is_skipped_by_the_release_that_reaches_it(q):
    holder, skipped, last = q.submit("t", "r"), q.submit("t", "r"), q.submit("t", "r")
    assert q.b.cancel(skipped) == 1
    assert q.counts()["waiting"] == 1 and q.waiting("r") == [skipped, last]
    _, token = q.lease(P1)
    assert q.b.complete(P1, [holder, token]) == [1]
    assert q.locks() == {"r": last} and q.pending() == [last] and q.waiting("r") == []
    assert q.counts()["waiting"] == 0 and kept(q, skipped)


def test_cancel_of_a_pending_holder_hands_the_resource_to_the_next_job_at_once(q):
    holder, behind = q.submit("t", "r"), q.submit("t", "r")
    assert q.b.cancel(holder) == 1
    assert q.locks() == {"r": behind} and q.rec(behind)["state"] == "pending"
    assert q.held() == {}


def test_cancel_of_a_delayed_job_takes_it_out_of_the_delayed_set(q):
    job_id, behind = q.submit("new", "r"), q.submit("t", "r")
    _, token = q.lease(P1)
    assert q.b.give_back_unknown(P1, [job_id, token, "unknown"], 60_000) == [3]
    assert q.b.cancel(job_id) == 1
    assert q.r.zcard(q.k.delayed) == 0 and q.rec(job_id)["state"] == "cancelled"
    assert q.locks() == {"r": behind} and kept(q, job_id)


@pytest.mark.parametrize("finish", ["complete", "fail", "fail_final", "give_back", "flush"])
def test_every_finish_of_a_running_job_a_cancel_reached_ends_it_cancelled(q, finish):
    job_id, behind = q.submit("t", "r", retries=2), q.submit("t", "r")
    _, token = q.lease(P1)
    assert q.b.cancel(job_id) == 1
    assert q.rec(job_id)["state"] == "active" and q.rec(job_id)["cancel"] == "1"
    assert q.b.heartbeat(P1)[2] == [job_id.encode()]     # how its process learns of it
    assert q.b.cancel(job_id) == 1                       # still under way
    if finish == "complete":
        assert q.b.complete(P1, [job_id, token]) == [4]
    elif finish.startswith("fail"):
        assert q.b.fail(P1, [job_id, token, "JobCancelled", "c" if finish == "fail" else "1"]) == [4]
    elif finish == "give_back":
        assert q.b.run_batch(q.client, [q.b.give_back_call(P1, [job_id, token])]) == [[4]]
    else:
        q.make_stale(P1)
        rows = q.b.flush_stale(100)
        assert rows[0].decode() == job_id and rows[1] == b"cancel"
    rec = q.rec(job_id)
    assert rec["state"] == "cancelled" and rec["retries"] == "2" and kept(q, job_id)
    assert q.locks() == {"r": behind} and q.pending() == [behind]
    assert q.b.heartbeat(P1)[2] == [] and q.b.cancel(job_id) == 0
    assert q.failed() == []


def test_a_late_finish_after_a_cancelled_job_was_flushed_is_fenced(q):
    job_id = q.submit("t", "r")
    _, token = q.lease(P1)
    q.b.cancel(job_id)
    q.make_stale(P1)
    q.b.flush_stale(100)
    assert q.b.complete(P1, [job_id, token]) == [-1]
    assert q.rec(job_id)["state"] == "cancelled"


def test_cancel_of_an_ended_or_unknown_job_answers_0_and_changes_nothing(q):
    assert q.b.cancel("nope") == 0
    job_id = q.submit("t")
    _, token = q.lease(P1)
    q.b.complete(P1, [job_id, token])
    before = q.snapshot()
    assert q.b.cancel(job_id) == 0
    assert q.snapshot() == before
    q.r.set(q.k.job("junk"), "x")
    assert q.b.cancel("junk") == 0


def test_a_watched_job_publishes_its_id_when_it_ends_and_an_unwatched_one_does_not(q, r):
    watched, quiet = q.submit("t"), q.submit("t")
    r.hset(q.k.job(watched), "watch", 1)
    listener = r.pubsub()
    listener.subscribe(q.k.ended)
    assert listener.get_message(timeout=1)["type"] == "subscribe"
    jobs, _ = q.fetch(P1, 2)
    pairs = [x for job in jobs for x in (job[0].decode(), job[1])]
    q.b.complete(P1, pairs)
    message = listener.get_message(timeout=1)
    job_id, flat = msgpack.unpackb(message["data"], raw=True)   # the record rides along
    record = dict(zip(flat[0::2], flat[1::2]))
    assert job_id == watched.encode() and record[b"state"] == b"succeeded"
    assert listener.get_message(timeout=0.2) is None
    listener.close()


def test_a_watched_record_outlives_result_ttl_0_for_its_waiters(redis_url, namespace, r):
    q = Q(redis_url, namespace, r, result_ttl=0)
    try:
        watched, plain = q.submit("t"), q.submit("t")
        r.hset(q.k.job(watched), "watch", 1)
        jobs, _ = q.fetch(P1, 2)
        q.b.complete(P1, [x for job in jobs for x in (job[0].decode(), job[1])])
        assert not r.exists(q.k.job(plain))
        assert r.hget(q.k.job(watched), "state") == b"succeeded" and r.pttl(q.k.job(watched)) > 0
    finally:
        q.close()


def test_coalesce_targets_the_newest_not_started_job_and_a_re_send_answers_the_same_ids(q):
    holder = q.submit("t", "r")
    _, _token = q.lease(P1)                               # running: never a target
    rows = [q.row("t", "r", {"v": 1}), q.row("t", "r", {"v": 2}), q.row("t", "r", {"v": 3}, retries=5)]
    for row in rows:
        row[6] = "1"
    calls = q.b.submit_calls(rows)
    first = q.b.run_batch(q.client, calls)
    assert first == [[1, [2, rows[0][0].encode(), 3, rows[0][0].encode()]]]
    assert q.b.run_batch(q.client, calls) == [[0, first[0][1]]]  # a re-send: the same ids, nothing added
    assert q.waiting("r") == [rows[0][0]] and q.rec(rows[0][0])["retries"] == "5"
    assert q.locks() == {"r": holder}
    added, ids = q.b.add([q.row("other", "r", {"v": 4})[:6] + ["1"]])
    assert added == 1 and ids[0] != rows[0][0]             # another task: a new job


def test_the_lease_counter_is_one_per_queue_and_only_grows(q):
    ids = [q.submit("t") for _ in range(3)]
    tokens = []
    for _ in ids:
        job_id, token = q.lease(P1 if len(tokens) % 2 else P2)
        tokens.append(token)
        q.b.complete(P1 if len(tokens) % 2 == 0 else P2, [job_id, token])
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    assert int(q.r.hget(q.k.counts, "fence")) == tokens[-1]
