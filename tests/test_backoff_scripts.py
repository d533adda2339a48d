"""Retry back-off in the scripts, on raw Redis state: fail.lua's wait, the
stale flush and reclaim_process drawing it from the retry_policies HASH, and
what a job waiting out a back-off is (scheduled, holding its resource,
cancelable, counted)."""

from __future__ import annotations

import pytest

from greenq.registry import Task
from test_scripts import P1, P2, Q, delayed, q  # noqa: F401 - q: the fixture

POLICY = "1000 2.0 5000"  # retry_delay 1 s, doubling, at most 5 s


def waited(q, call):
    """Run `call`; return its result and, for each job it put in the delayed
    set, the bounds (low, high) of the wait it was given, in ms: its score
    less Redis' clock after and before the call."""
    before = q.now_ms()
    result = call()
    after = q.now_ms()
    return result, {job_id: (score - after, score - before) for job_id, score in delayed(q).items()}


def assert_within(bounds, d):
    low, high = bounds
    # [d/2, d], give or take the ms each wait is rounded to.
    assert high >= d / 2 - 1 and low <= d + 1, (bounds, d)


# -- fail.lua ------------------------------------------------------------------


def test_a_failed_run_with_a_wait_is_scheduled_holding_its_resource_and_later_jobs_stay_behind(q):
    first = q.submit("t", "r", retries=2)
    second = q.submit("t", "r")
    token = q.lease(P1)[1]
    codes, waits = waited(q, lambda: q.b.fail(P1, [first, token, "boom", "0"], waits=[700]))
    assert codes == [2]
    assert_within(waits[first], 1400)
    assert 700 - 1 <= waits[first][1] and waits[first][0] <= 700 + 1
    rec = q.rec(first)
    assert rec["state"] == "scheduled" and rec["retries"] == "1" and rec["error"] == "boom"
    assert rec["attempts"] == "1"                    # waiting is no attempt
    assert q.locks() == {"r": first} and q.waiting("r") == [second]
    assert q.pending() == [] and q.counts() == {"active": 0, "waiting": 1}
    assert q.b.stats()["scheduled"] == 1
    assert q.fetch(P2, 5)[0] == []                   # nothing runnable: the later job waits
    q.r.zadd(q.k.delayed, {first: q.now_ms() - 1})   # its time came
    assert q.lease(P2, timeouts=["t", 1000]) == (first, token + 1)
    assert q.rec(first)["attempts"] == "2" and q.waiting("r") == [second]


def test_a_failed_run_without_a_wait_retries_at_once(q):
    job = q.submit("t", "r", retries=1)
    token = q.lease(P1)[1]
    assert q.b.fail(P1, [job, token, "boom", "0"], waits=[0]) == [2]
    assert q.pending() == [job] and delayed(q) == {} and q.rec(job)["state"] == "pending"


def test_a_wait_changes_nothing_for_a_final_failure_or_no_retries_left(q):
    final = q.submit("t", "a", retries=3)
    spent = q.submit("t", "b", retries=0)
    leases = dict(q.lease(P1) for _ in range(2))
    groups = [final, leases[final], "undecodable", "1", spent, leases[spent], "boom", "0"]
    assert q.b.fail(P1, groups, waits=[500, 500]) == [1, 1]
    assert q.failed() == [final, spent] and delayed(q) == {} and q.locks() == {}


def test_a_resent_fail_with_a_wait_returns_its_first_outcome_and_changes_nothing(q):
    job = q.submit("t", "r", retries=1)
    token = q.lease(P1)[1]
    assert q.b.fail(P1, [job, token, "boom", "0"], waits=[900]) == [2]
    before = q.snapshot()
    assert q.b.fail(P1, [job, token, "boom", "0"], waits=[900]) == [2]
    assert q.snapshot() == before


def test_the_broker_refuses_waits_that_do_not_match_the_jobs(q):
    with pytest.raises(ValueError):
        q.b.fail(P1, ["a", 1, "x", "0"], waits=[1, 2])


# -- a back-off job: cancel, manual retry ------------------------------------


def test_a_job_cancelled_while_it_waits_out_a_back_off_ends_cancelled_and_passes_its_resource_on(
        redis_url, namespace, r):
    q = Q(redis_url, namespace, r, result_ttl=60)
    try:
        first = q.submit("t", "r", retries=1)
        second = q.submit("t", "r")
        token = q.lease(P1)[1]
        assert q.b.fail(P1, [first, token, "boom", "0"], waits=[60_000]) == [2]
        assert q.b.cancel(first) == 1
        assert q.rec(first)["state"] == "cancelled"
        assert delayed(q) == {} and q.b.stats()["scheduled"] == 0
        assert q.locks() == {"r": second} and q.pending() == [second]
        assert q.lease(P2)[0] == second
    finally:
        q.close()


def test_a_manual_retry_of_a_failed_job_runs_at_once_whatever_its_task_s_back_off(q):
    q.r.hset(q.k.retry_policies, "t", POLICY)
    job = q.submit("t", "r")
    token = q.lease(P1)[1]
    assert q.b.fail(P1, [job, token, "boom", "0"]) == [1]
    assert q.b.retry_failed(100) == 1
    assert q.pending() == [job] and delayed(q) == {}


# -- dead jobs: the stale flush and reclaim_process -----------------------------


def test_a_dead_job_waits_its_task_s_back_off_growing_by_the_formula_up_to_the_cap(q):
    q.r.hset(q.k.retry_policies, "t", POLICY)
    job = q.submit("t", "r", retries=5)
    behind = q.submit("t", "r")
    for attempt, d in ((1, 1000), (2, 2000), (3, 4000), (4, 5000), (5, 5000)):
        assert q.lease(P1, timeouts=["t", 1000])[0] == job
        assert q.rec(job)["attempts"] == str(attempt)
        q.make_stale(P1)
        rows, waits = waited(q, lambda: q.b.flush_stale(100))
        assert rows[0].decode() == job and rows[1] == b"delay"
        assert_within(waits[job], d)
        assert q.rec(job)["state"] == "scheduled" and q.locks() == {"r": job}
        assert q.waiting("r") == [behind] and q.pending() == []
        q.r.zadd(q.k.delayed, {job: 0})               # its time came
    assert q.lease(P1, timeouts=["t", 1000])[0] == job
    q.make_stale(P1)
    rows = q.b.flush_stale(100)
    assert rows[1] == b"fail" and q.locks() == {"r": behind}


def test_a_dead_job_of_a_task_without_a_policy_retries_at_once(q):
    q.r.hset(q.k.retry_policies, "other", POLICY)
    job = q.submit("t", "r", retries=1)
    q.lease(P1, timeouts=["t", 1000])
    q.make_stale(P1)
    rows = q.b.flush_stale(100)
    assert rows[1] == b"retry" and q.pending() == [job] and delayed(q) == {}


def test_reclaim_process_gives_a_dead_child_s_job_its_task_s_back_off(q):
    q.r.hset(q.k.retry_policies, "t", "3000 2.0 60000")
    job = q.submit("t", "r", retries=1)
    q.lease(P1)
    (rows, left), waits = waited(q, lambda: q.b.reclaim_process(P1, "dead", 100))
    assert left == 0 and rows[1] == b"delay" and rows[6] == 0
    assert_within(waits[job], 3000)
    assert q.rec(job)["state"] == "scheduled" and q.locks() == {"r": job}


def test_dead_jobs_flushed_together_get_spread_waits(q):
    q.r.hset(q.k.retry_policies, "t", "100000 2.0 3600000")
    jobs = [q.submit("t", retries=1) for _ in range(40)]
    q.fetch(P1, 40)
    q.make_stale(P1)
    assert len(q.b.flush_stale(100)) == 9 * 40
    scores = delayed(q)
    assert set(scores) == set(jobs)
    assert len(set(scores.values())) > 30


def test_dead_jobs_flushed_by_separate_calls_get_different_waits(q):
    """Redis before 7.0 seeds Lua's random generator the same for every
    script call: include/backoff.lua seeds it itself, or each call would
    draw the same there (this server may not need it; the draw must stay
    spread either way)."""
    q.r.hset(q.k.retry_policies, "t", "100000 2.0 3600000")
    waits = []
    for n in range(12):
        job = q.submit("t", retries=1)
        proc = f"host:9:p{n}"
        q.fetch(proc, 1)
        (rows, _left), bounds = waited(q, lambda: q.b.reclaim_process(proc, "dead", 10))
        waits.append(bounds[job][1] // 10)              # to 10 ms: clock steps between calls
        q.r.zrem(q.k.delayed, job)
    assert len(set(waits)) > 6, waits


def test_a_malformed_policy_retries_at_once(q):
    q.r.hset(q.k.retry_policies, "t", "soon please")
    job = q.submit("t", retries=1)
    q.lease(P1, timeouts=["t", 1000])
    q.make_stale(P1)
    assert q.b.flush_stale(100)[1] == b"retry" and q.pending() == [job]


# -- the policies each worker process writes -----------------------------------


def test_publish_retry_policies_writes_tasks_with_a_delay_and_removes_the_others(q):
    def noop(params):
        return None

    q.r.hset(q.k.retry_policies, "b", "1 1 1")
    q.b.publish_retry_policies([Task("a", noop, retry_delay=0.5, retry_backoff=1.5,
                                     retry_delay_max=30.0),
                                Task("b", noop)])
    assert q.r.hgetall(q.k.retry_policies) == {b"a": b"500 1.5 30000"}
    q.b.publish_retry_policies([])
    assert q.r.hgetall(q.k.retry_policies) == {b"a": b"500 1.5 30000"}


def test_the_lua_back_off_matches_task_retry_wait(q):
    """include/backoff.lua and Task.retry_wait draw from the same range."""
    from test_scripts import include_alone

    def noop(params):
        return None

    task = Task("t", noop, retry_delay=0.25, retry_backoff=3.0, retry_delay_max=20.0)
    for n in range(1, 8):
        low = task.retry_wait(n, lambda a, b: a) * 1000
        high = task.retry_wait(n, lambda a, b: b) * 1000
        for _ in range(5):
            wait = include_alone(q, ["backoff"], f"return backoff_ms(ARGV[1], {n})", (),
                                 ("250 3.0 20000",))
            assert low - 1 <= wait <= high + 1, (n, wait, low, high)
    assert include_alone(q, ["backoff"], "return backoff_ms(false, 1)") == 0
    assert include_alone(q, ["backoff"], "return backoff_ms('0 2.0 1000', 1)") == 0
