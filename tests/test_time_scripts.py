"""Time in the scripts (issue 14): jobs submitted with a due time, their
promotion into their resource's order, the wake-up id for idle workers,
and rate limits, asserting on raw Redis state by Redis' clock."""

from __future__ import annotations


from test_scripts import DEFAULT_MS, P1, P2, come_due, delayed, q  # noqa: F401 - q: the fixture
from greenq.job import FETCH_ROW

KNOWS = ["t", 1000, "u", 1000]


def submit_due(q, due: str, task="t", resource=None) -> str:
    row = q.row(task, resource) + ["0"]
    row[6:] = ["0", due]
    assert q.b.submit([row]) == 1
    return row[0]


def raw_pending(q) -> list[str]:
    return [x.decode() for x in reversed(q.r.lrange(q.k.pending, 0, -1))]


def fetch_ids(q, proc=P1, n=5, limits=()) -> tuple[list[str], list, int]:
    rows, problems, due = q.b.fetch(q.client, proc, n, DEFAULT_MS, KNOWS, list(limits),
                                    with_due=True)
    return [rows[i].decode() for i in range(0, len(rows), FETCH_ROW)], problems, due


# -- submitted with a due time ---------------------------------------------------

def test_a_job_due_later_waits_scheduled_outside_its_resources_order(q):
    before = q.now_ms()
    job_id = submit_due(q, "+5000", resource="r")
    assert q.rec(job_id)["state"] == "scheduled"
    assert before + 5000 <= delayed(q)[job_id] <= q.now_ms() + 5000
    assert q.locks() == {} and q.counts() == {"active": 0, "waiting": 0}
    # a later job of the same resource is runnable now: the delayed one holds nothing
    later = q.submit("t", "r")
    assert q.locks() == {"r": later} and q.b.stats()["scheduled"] == 1


def test_an_epoch_due_time_is_read_by_redis_clock_and_one_past_runs_now(q):
    future = submit_due(q, str(q.now_ms() + 60_000))
    past = submit_due(q, str(q.now_ms() - 60_000), resource="r")
    assert delayed(q) == {future: delayed(q)[future]}
    assert q.rec(past)["state"] == "pending" and q.locks() == {"r": past}


def test_a_due_job_takes_its_place_in_its_resources_order_only_when_promoted(q):
    job_id = submit_due(q, "+60000", resource="r")
    holder = q.submit("t", "r")
    ids, _, _ = fetch_ids(q, n=1)
    assert ids == [holder]
    behind = q.submit("t", "r")
    come_due(q, job_id)
    ids, problems, due = fetch_ids(q)
    # the resource is busy: it waits behind the job that came before it became due
    assert ids == [] and problems == [] and due == -1
    assert q.rec(job_id)["state"] == "waiting" and q.waiting("r") == [behind, job_id]
    assert q.counts()["waiting"] == 2


def test_a_due_job_whose_resource_is_free_takes_it_and_runs(q):
    job_id = submit_due(q, "+60000", resource="r")
    come_due(q, job_id)
    ids, _, _ = fetch_ids(q)
    assert ids == [job_id] and q.locks() == {"r": job_id}
    assert q.rec(job_id)["state"] == "active" and q.rec(job_id)["attempts"] == "1"


def test_the_fetch_says_when_the_earliest_delayed_job_is_due(q):
    assert fetch_ids(q)[2] == -1
    submit_due(q, "+30000")
    submit_due(q, "+20000")
    _, _, due = fetch_ids(q)
    assert 19_000 <= due <= 20_000


# -- the wake-up id ----------------------------------------------------------------

def test_a_job_due_before_every_other_pushes_one_wake_up_id(q):
    submit_due(q, "+20000")
    assert q.r.lrange(q.k.pending, 0, -1) == [b""]
    submit_due(q, "+30000")                     # not the earliest: no wake-up
    assert q.r.llen(q.k.pending) == 1
    rows = [q.row() + ["0"] for _ in range(3)]
    for n, row in enumerate(rows):
        row[6:] = ["0", f"+{10000 - n}"]
    assert q.b.stats()["pending"] == 0          # counted out like cancelled ids
    ids, problems, _ = fetch_ids(q)
    assert ids == [] and problems == [] and q.r.llen(q.k.pending) == 0
    assert q.b.submit(rows) == 3                # earlier, three in one call: one wake-up
    assert q.r.llen(q.k.pending) == 1
    submit_due(q, "+5000")                      # earlier still, but pending is not empty:
    assert q.r.llen(q.k.pending) == 1           # no worker is blocked, the next fetch sees it
    fetch_ids(q)
    assert q.b.stats()["pending"] == 0 and q.b.stats()["scheduled"] == 6


def test_an_idle_wait_is_ended_by_the_wake_up_id_and_its_fetch_skips_it(q):
    submit_due(q, "+20000")
    rows, problems, due = q.b.wait_and_fetch(q.client, 1, P2, 1, DEFAULT_MS, KNOWS, with_due=True)
    assert rows == [] and problems == [] and 19_000 <= due <= 20_000
    assert q.r.llen(q.k.handoff) == 0 and q.b.stats()["pending"] == 0


def test_wake_says_how_long_until_due_and_wakes_only_once_due_with_pending_empty(q):
    assert q.b.wake() == -1
    job_id = submit_due(q, "+20000")
    fetch_ids(q)                                # takes submit's wake-up id
    assert 19_000 <= q.b.wake() <= 20_000 and q.r.llen(q.k.pending) == 0
    come_due(q, job_id)
    assert q.b.wake() == 0 and q.r.lrange(q.k.pending, 0, -1) == [b""]
    assert q.b.wake() == 0 and q.r.llen(q.k.pending) == 1   # pending not empty: nobody blocked
    assert fetch_ids(q)[0] == [job_id] and q.b.stats()["pending"] == 0


# -- cancel ------------------------------------------------------------------------

def test_cancelling_a_delayed_job_leaves_the_resource_to_its_holder(q):
    job_id = submit_due(q, "+60000", resource="r")
    holder = q.submit("t", "r")
    assert q.b.cancel(job_id) == 1
    assert delayed(q) == {} and q.locks() == {"r": holder}
    assert q.b.stats()["scheduled"] == 0


# -- rate limits -------------------------------------------------------------------

LIMIT = ["t", 3, 60_000]   # three starts a minute


def test_a_rate_limited_task_starts_n_jobs_then_waits_scheduled_without_an_attempt(q):
    ids = [q.submit("t") for _ in range(5)]
    before = q.now_ms()
    leased, problems, due = fetch_ids(q, n=5, limits=LIMIT)
    assert leased == ids[:3] and problems == []
    waits = delayed(q)
    assert sorted(waits) == sorted(ids[3:])
    # slots a period after the oldest start in the window, then period / N apart
    first = waits[ids[3]]
    assert before + 60_000 <= first <= q.now_ms() + 60_000
    assert waits[ids[4]] - first in (20_000, 20_001)
    for job_id in ids[3:]:
        rec = q.rec(job_id)
        assert rec["state"] == "scheduled" and rec.get("attempts", "0") == "0" and "lease" not in rec
    assert q.b.stats()["scheduled"] == 2 and 59_000 <= due <= 60_000
    log = [int(x) for x in q.r.lrange(q.k.prefix + "rate:t", 0, -1)]
    assert len(log) == 3 and 0 < q.r.pttl(q.k.prefix + "rate:t") <= 60_000


def test_a_job_whose_slot_came_starts_only_when_the_window_allows_it(q):
    ids = [q.submit("t") for _ in range(4)]
    fetch_ids(q, n=4, limits=LIMIT)
    come_due(q, ids[3])
    # its slot's time came early (moved by hand): the window is still full
    assert fetch_ids(q, n=4, limits=LIMIT)[0] == []
    assert ids[3] in delayed(q)
    # a minute later by the log: starts
    q.r.delete(q.k.prefix + "rate:t")
    come_due(q, ids[3])
    assert fetch_ids(q, n=4, limits=LIMIT)[0] == [ids[3]]


def test_a_job_over_the_limit_keeps_its_resource_and_order(q):
    for _ in range(3):
        q.submit("t")
    fetch_ids(q, n=3, limits=LIMIT)
    limited = q.submit("t", "r")
    behind = q.submit("u", "r")
    assert fetch_ids(q, n=5, limits=LIMIT)[0] == []
    assert q.locks() == {"r": limited} and q.waiting("r") == [behind]
    q.r.delete(q.k.prefix + "rate:t")
    come_due(q, limited)
    assert fetch_ids(q, n=5, limits=LIMIT)[0] == [limited]


def test_other_tasks_are_not_held_by_a_limited_one(q):
    for _ in range(5):
        q.submit("t")
    free = [q.submit("u") for _ in range(3)]
    leased, _, _ = fetch_ids(q, n=10, limits=LIMIT)
    assert len(leased) == 6 and set(free) <= set(leased)


def test_a_limited_job_cancelled_while_it_waits_for_its_slot_never_runs(q):
    ids = [q.submit("t", "r" if n == 3 else None) for n in range(4)]
    fetch_ids(q, n=4, limits=LIMIT)
    assert q.b.cancel(ids[3]) == 1
    assert delayed(q) == {} and q.locks() == {}
    assert not q.r.exists(q.k.job(ids[3]))       # ended at once (result_ttl 0 here)
    q.r.delete(q.k.prefix + "rate:t")
    assert fetch_ids(q, n=4, limits=LIMIT)[0] == []
