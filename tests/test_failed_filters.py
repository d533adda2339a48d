"""The failed-queue calls with filters: retry_failed_jobs / delete_failed_jobs
by job ids, by task, or both, and failed_jobs(task_id=...), against the
private redis-server. Failed jobs come from real workers running a task
that raises, or, where thousands are needed, from the submit, fetch and
fail scripts the workers use."""

from __future__ import annotations

import msgpack
import pytest

from conftest import wait_until
from greenq import ParamsError
from greenq.job import FETCH_ROW
from greenq.queue import new_job_id
from queue_state import queued_ids

PROC = "host:1:filters"
ALL = ("retry", "delete")


# -- helpers -------------------------------------------------------------------


def fail_with_worker(make_queue, jobs: list[tuple[str, str | None]]) -> list[str]:
    """Submit (task, resource) jobs that raise, run them on a real worker
    (one at a time, so they fail in submission order) until all failed.
    Returns their ids, in the failed list's order."""
    worker = make_queue("filters", worker_count=1)
    failed = []
    worker.on("job_fail", failed.append)
    worker.start()
    ids = [worker.submit_job(task, resource_id=resource, params={"fail": f"job {n}"})
           for n, (task, resource) in enumerate(jobs)]
    wait_until(lambda: len(failed) == len(ids), timeout=30)
    worker.shutdown()
    assert [job.id for job in failed] == ids
    return ids


def fail_by_script(queue, tasks: list[str]) -> list[str]:
    """One failed job per entry of `tasks` (its task id), through the submit,
    fetch and fail scripts, as a worker would, 100 at a time. Returns the
    ids, in the failed list's order."""
    broker = queue.broker
    rows = [[new_job_id(), task, "", "m", msgpack.packb({"n": n}), 0, "0"]
            for n, task in enumerate(tasks)]
    broker.submit(rows)
    client = broker.channel(1)
    try:
        while True:
            flat, problems = broker.fetch(client, PROC, 100, 10_000, [])
            assert problems == []
            if not flat:
                break
            groups = []
            for i in range(0, len(flat), FETCH_ROW):
                groups += [flat[i], flat[i + 1], "boom", "1"]
            assert set(broker.fail(PROC, groups)) == {1}
    finally:
        broker.close(client)
    return [row[0] for row in rows]


def failed_ids(r, queue) -> list[str]:
    return [x.decode() for x in r.lrange(queue.keys.failed, 0, -1)]


def queued(r, queue) -> list[str]:
    return [x.decode() for x in queued_ids(r, queue.keys.prefix)]


def state(r, queue, job_id) -> str | None:
    value = r.hget(queue.keys.job(job_id), "state")
    return value.decode() if value is not None else None


def snapshot(r, queue) -> dict:
    """Every key of this queue with its value: to prove a call changed nothing."""
    out = {}
    for key in sorted(r.scan_iter(match=queue.keys.prefix + "*")):
        kind = r.type(key)
        if kind == b"hash":
            out[key] = r.hgetall(key)
        elif kind == b"list":
            out[key] = r.lrange(key, 0, -1)
        elif kind == b"zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = r.get(key)
    return out


def act(queue, mode: str, **filters) -> int:
    call = queue.retry_failed_jobs if mode == "retry" else queue.delete_failed_jobs
    return call(**filters)


def assert_acted_on(r, queue, mode: str, ids: list[str]) -> None:
    """`ids` were retried (queued again, in this order) or deleted."""
    if mode == "retry":
        assert queued(r, queue) == ids
        for job_id in ids:
            assert state(r, queue, job_id) == "pending"
            assert not r.hexists(queue.keys.job(job_id), "owner")
    else:
        assert queued(r, queue) == []
        for job_id in ids:
            assert not r.exists(queue.keys.job(job_id))


def assert_still_failed(r, queue, ids: list[str]) -> None:
    assert failed_ids(r, queue) == ids
    for job_id in ids:
        assert state(r, queue, job_id) == "failed"


# -- by ids --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL)
def test_one_failed_job_by_id_is_acted_on_and_the_others_stay_failed_in_order(
        make_queue, r, mode):
    ids = fail_with_worker(make_queue, [("filters.a", None)] * 3)
    queue = make_queue()

    assert act(queue, mode, job_ids=[ids[1]]) == 1

    assert_acted_on(r, queue, mode, [ids[1]])
    assert_still_failed(r, queue, [ids[0], ids[2]])


@pytest.mark.parametrize("mode", ALL)
def test_several_failed_jobs_by_id_are_acted_on_in_the_order_given(make_queue, r, mode):
    ids = fail_with_worker(make_queue, [("filters.a", None), ("filters.b", None),
                                        ("filters.a", None), ("filters.b", None)])
    queue = make_queue()

    assert act(queue, mode, job_ids=(job_id for job_id in [ids[3], ids[0]])) == 2

    assert_acted_on(r, queue, mode, [ids[3], ids[0]])
    assert_still_failed(r, queue, [ids[1], ids[2]])


@pytest.mark.parametrize("mode", ALL)
def test_an_unknown_id_is_left_alone_and_counted_zero(make_queue, r, mode):
    fail_with_worker(make_queue, [("filters.a", None)])
    queue = make_queue()
    before = snapshot(r, queue)

    assert act(queue, mode, job_ids=["no-such-job"]) == 0
    assert act(queue, mode, job_ids=[]) == 0  # an empty selection, not "every job"

    assert snapshot(r, queue) == before


@pytest.mark.parametrize("mode", ALL)
def test_an_id_that_is_pending_not_failed_is_left_alone(make_queue, r, mode):
    failed = fail_with_worker(make_queue, [("filters.a", "res-1")])
    queue = make_queue()
    pending = queue.submit_job("filters.a", resource_id="res-2")
    before = snapshot(r, queue)

    assert act(queue, mode, job_ids=[pending]) == 0
    assert snapshot(r, queue) == before
    assert queued(r, queue) == [pending] and state(r, queue, pending) == "pending"

    # Among others: only the failed one counts, the pending one is not queued twice.
    assert act(queue, mode, job_ids=[pending, "no-such-job", failed[0], failed[0]]) == 1
    assert state(r, queue, pending) == "pending"
    if mode == "retry":
        assert queued(r, queue) == [pending, failed[0]]
    else:
        assert queued(r, queue) == [pending] and not r.exists(queue.keys.job(failed[0]))
    assert failed_ids(r, queue) == []


def test_more_ids_than_one_script_call_takes_are_all_acted_on(make_queue, r):
    queue = make_queue()
    ids = fail_by_script(queue, ["filters.a"] * 250)

    assert queue.retry_failed_jobs(job_ids=ids[::-1][:230]) == 230

    assert queued(r, queue) == ids[::-1][:230]
    assert failed_ids(r, queue) == ids[:20]


def test_a_failed_id_whose_record_is_gone_is_dropped_by_retry_and_counted_by_delete(
        make_queue, r):
    queue = make_queue()
    r.rpush(queue.keys.failed, "gone-1", "gone-2")

    assert queue.retry_failed_jobs(job_ids=["gone-1"]) == 0
    assert failed_ids(r, queue) == ["gone-2"] and queued(r, queue) == []
    assert queue.delete_failed_jobs(job_ids=["gone-2"]) == 1
    assert failed_ids(r, queue) == []


# -- by task -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL)
def test_by_task_only_that_tasks_failed_jobs_are_acted_on_oldest_first(make_queue, r, mode):
    tasks = ["filters.a", "filters.b", "filters.b", "filters.a", "filters.b", "filters.a"]
    ids = fail_with_worker(make_queue, [(task, None) for task in tasks])
    queue = make_queue()

    assert act(queue, mode, task_id="filters.a") == 3

    assert_acted_on(r, queue, mode, [ids[0], ids[3], ids[5]])
    assert_still_failed(r, queue, [ids[1], ids[2], ids[4]])
    assert act(queue, mode, task_id="filters.a") == 0
    assert act(queue, mode, task_id="no.such.task") == 0
    assert_still_failed(r, queue, [ids[1], ids[2], ids[4]])


@pytest.mark.parametrize("mode", ALL)
def test_by_task_over_5000_failed_jobs_half_matching_leaves_exactly_the_others_in_order(
        make_queue, r, mode):
    queue = make_queue()
    tasks = ["filters.a" if n % 2 == 0 else "filters.b" for n in range(5000)]
    ids = fail_by_script(queue, tasks)
    matching = ids[0::2]
    others = ids[1::2]

    assert act(queue, mode, task_id="filters.a") == 2500

    assert failed_ids(r, queue) == others
    assert_acted_on(r, queue, mode, matching)
    assert all(r.hget(queue.keys.job(job_id), "task") == b"filters.b" for job_id in others)


def test_a_walk_also_takes_jobs_that_fail_after_it_started_and_returns_its_cursor(
        make_queue, r):
    queue = make_queue()
    ids = fail_by_script(queue, ["filters.a", "filters.b", "filters.a", "filters.a", "filters.b"])

    # Slots 0-2 (a b a): two removed, so the next slot to read is 1 (the a of slot 3).
    assert queue.broker.failed_select("delete", task_id="filters.a", cursor=0,
                                      limit=3) == (2, 1, False)
    assert failed_ids(r, queue) == [ids[1], ids[3], ids[4]]
    late = fail_by_script(queue, ["filters.a"])
    assert queue.broker.failed_select("delete", task_id="filters.a", cursor=1,
                                      limit=3) == (2, 2, True)
    assert failed_ids(r, queue) == [ids[1], ids[4]]
    assert not r.exists(queue.keys.job(late[0]))


def test_the_script_refuses_an_unknown_mode_and_changes_nothing(make_queue, r):
    import redis

    queue = make_queue()
    fail_by_script(queue, ["filters.a"])
    before = snapshot(r, queue)

    with pytest.raises(redis.ResponseError, match="mode must be retry or delete"):
        queue.broker.failed_select("purge", task_id="filters.a", cursor=0, limit=10)
    assert snapshot(r, queue) == before


# -- both filters, no filter -----------------------------------------------------


@pytest.mark.parametrize("mode", ALL)
def test_ids_and_task_together_act_only_on_jobs_matching_both(make_queue, r, mode):
    ids = fail_with_worker(make_queue, [("filters.a", None), ("filters.b", None),
                                        ("filters.a", None), ("filters.a", None)])
    queue = make_queue()

    assert act(queue, mode, job_ids=[ids[0], ids[1], ids[3]], task_id="filters.a") == 2

    assert_acted_on(r, queue, mode, [ids[0], ids[3]])
    assert_still_failed(r, queue, [ids[1], ids[2]])


@pytest.mark.parametrize("mode", ALL)
def test_no_filter_acts_on_every_failed_job_as_before(make_queue, r, mode):
    ids = fail_with_worker(make_queue, [("filters.a", None), ("filters.b", None)])
    queue = make_queue()

    assert act(queue, mode) == 2
    assert act(queue, mode, job_ids=None, task_id=None) == 0

    assert failed_ids(r, queue) == []
    assert_acted_on(r, queue, mode, ids)


# -- resource locks --------------------------------------------------------------


def test_a_job_retried_by_id_waits_behind_its_resources_holder_then_runs(
        make_queue, r, redis_url, namespace):
    [failed] = fail_with_worker(make_queue, [("filters.a", "res-1")])
    key = namespace + ":rec"
    worker = make_queue("filters", "proc_sleep")
    worker.start()
    holder = worker.submit_job("proc.sleep", resource_id="res-1",
                               params={"url": redis_url, "key": key, "n": "holder", "first": 1.0})
    wait_until(lambda: r.llen(key + ":started") == 1)
    r.hset(worker.keys.job(failed), "params",
           msgpack.packb({"url": redis_url, "key": key, "mark": "retried"}))

    assert worker.retry_failed_jobs(job_ids=[failed], task_id="filters.a") == 1

    assert state(r, worker, failed) == "waiting"
    assert r.hget(worker.keys.locks, "res-1") == holder.encode()
    assert r.lrange(worker.keys.wait("res-1"), 0, -1) == [failed.encode()]
    assert r.lrange(key + ":done", 0, -1) == []
    wait_until(lambda: r.llen(key + ":done") == 2)
    assert r.lrange(key + ":done", 0, -1) == [b"holder", b"retried"]
    wait_until(lambda: not r.exists(worker.keys.locks))
    assert failed_ids(r, worker) == []


# -- listing ---------------------------------------------------------------------


def test_failed_jobs_by_task_lists_only_that_tasks_jobs_oldest_first_up_to_limit(make_queue):
    tasks = ["filters.a", "filters.b"] * 4
    ids = fail_with_worker(make_queue, [(task, None) for task in tasks])
    queue = make_queue()

    listed = queue.failed_jobs(limit=3, task_id="filters.b")
    assert [job.id for job in listed] == [ids[1], ids[3], ids[5]]
    assert all(job.task_id == "filters.b" and "asked to fail" in job.error for job in listed)
    assert [job.id for job in queue.failed_jobs(task_id="filters.a")] == ids[0::2]
    assert queue.failed_jobs(task_id="no.such.task") == []
    assert [job.id for job in queue.failed_jobs(limit=2)] == ids[:2]


def test_failed_jobs_by_task_finds_matches_past_the_first_chunk_of_the_list(make_queue):
    queue = make_queue()
    ids = fail_by_script(queue, ["filters.b"] * 1500 + ["filters.a"] * 3 + ["filters.b"] * 10)

    assert [job.id for job in queue.failed_jobs(task_id="filters.a")] == ids[1500:1503]
    assert [job.id for job in queue.failed_jobs(limit=2, task_id="filters.a")] == ids[1500:1502]


# -- bad input -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize("filters, error, message", [
    ({"job_ids": "abc"}, TypeError, "pass \\[job_id\\]"),
    ({"job_ids": b"abc"}, TypeError, "not a bytes"),
    ({"job_ids": 7}, TypeError, "iterable of job ids"),
    ({"job_ids": ["ok", 7]}, TypeError, r"job_ids\[1\] must be a str"),
    ({"job_ids": ["ok", ""]}, ParamsError, r"job_ids\[1\] must not be empty"),
    ({"job_ids": ["x" * 513]}, ParamsError, "at most 512"),
    ({"task_id": ""}, ParamsError, "task_id must not be empty"),
    ({"task_id": 3}, TypeError, "task_id must be a str"),
    ({"job_ids": ["ok"], "task_id": ""}, ParamsError, "task_id must not be empty"),
], ids=["bare-str", "bytes", "int", "int-item", "empty-item", "long-item", "empty-task",
        "int-task", "ids-and-empty-task"])
def test_bad_filters_raise_before_anything_is_written(make_queue, r, mode, filters, error,
                                                      message):
    queue = make_queue()
    ids = fail_by_script(queue, ["filters.a", "filters.a"])
    if "job_ids" in filters and isinstance(filters["job_ids"], list):
        filters["job_ids"] = [ids[0] if item == "ok" else item for item in filters["job_ids"]]
    before = snapshot(r, queue)

    with pytest.raises(error, match=message):
        act(queue, mode, **filters)

    assert snapshot(r, queue) == before


@pytest.mark.parametrize("task_id, error", [("", ParamsError), (3, TypeError)])
def test_failed_jobs_with_a_bad_task_id_raises(make_queue, task_id, error):
    with pytest.raises(error, match="task_id"):
        make_queue().failed_jobs(task_id=task_id)
