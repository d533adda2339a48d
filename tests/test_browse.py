"""greenq.browse, the dashboard's data layer, against the private
redis-server: every page on a queue with jobs in each state (a real worker
runs, fails and holds them), with one partition and with three; cursor
walks that visit every item once; filters; the actions, checked on raw
Redis state; bad input; and ids without a record in the lists."""

from __future__ import annotations

import os
import uuid

import pytest

from conftest import TASKS, wait_until
from greenq import GreenQueue, browse
from queue_state import queued_ids

PAGES = ("pending", "scheduled", "failed", "locked", "running", "processes", "schedules")
KEY = {"locked": "resource", "schedules": "name"}


def walk(page_of, limit: int, **kwargs) -> list:
    """Every item of a view, following cursors (a hang is a failure)."""
    items, cursor = [], None
    for _ in range(1000):
        page = page_of(cursor=cursor, limit=limit, **kwargs)
        assert len(page.items) <= limit
        items += page.items
        cursor = page.cursor
        if cursor is None:
            return items
    pytest.fail("the cursor walk did not end")


def ids_of(view: str, items: list[dict]) -> list[str]:
    return [item[KEY.get(view, "id")] for item in items]


def fail_jobs(queue: GreenQueue, jobs: list[tuple[str, str | None]]) -> list[str]:
    """Run jobs that raise on `queue`'s started worker until all failed."""
    ids = [queue.submit_job(task, resource_id=resource, params={"fail": f"<b>{n}</b>" * 80})
           for n, (task, resource) in enumerate(jobs)]
    wait_until(lambda: all(queue.get_job(i).state == "failed" for i in ids), timeout=20)
    return ids


@pytest.fixture(scope="module", params=[1, 3], ids=["partitions=1", "partitions=3"])
def scene(request, redis_server):
    """A queue with a live worker and jobs in every state: failed, running
    (holding resources), waiting behind them, pending, scheduled, and two
    schedules. Shared by the read-only tests of a module run."""
    queue = GreenQueue(redis_server.url, namespace="b" + uuid.uuid4().hex[:10],
                       partitions=request.param, worker_count=2)
    queue.register_task(os.path.join(TASKS, "filters.py"))
    queue.register_task(os.path.join(TASKS, "fault_slow.py"))
    queue.start()
    try:
        failed = fail_jobs(queue, [("filters.a", None), ("filters.b", "fr"), ("filters.a", "fr"),
                                   ("filters.b", None), ("filters.a", None)])
        running = [queue.submit_job("fault.slow", resource_id=f"slow-{n}",
                                    params={"n": n, "seconds": 60}) for n in range(2)]
        wait_until(lambda: queue.stats()["active"] == 2)
        waiting = [queue.submit_job("filters.a", resource_id="slow-0", params={"n": n})
                   for n in range(3)]
        pending = queue.submit_jobs([{"task_id": "filters.b", "params": {"n": n}}
                                     for n in range(4)])
        scheduled = queue.submit_jobs([{"task_id": "filters.a", "delay": 600 + n}
                                       for n in range(3)])
        queue.add_schedule("nightly", "filters.a", cron="0 3 * * *")
        queue.add_schedule("hourly", "filters.b", every=3600, resource_id="hr")
        yield {"queue": queue, "failed": failed, "running": running, "waiting": waiting,
               "pending": pending, "scheduled": scheduled, "partitions": request.param}
    finally:
        queue.shutdown(timeout=0.1)


# -- each page -----------------------------------------------------------------


def test_counts_are_the_queue_stats(scene):
    counts = browse.counts(scene["queue"])
    assert counts == scene["queue"].stats()
    assert (counts["failed"], counts["active"], counts["waiting"], counts["pending"],
            counts["scheduled"]) == (5, 2, 3, 4, 3)


@pytest.mark.parametrize("limit", [1, 2, 50])
@pytest.mark.parametrize("view", PAGES)
def test_a_cursor_walk_visits_every_item_of_a_view_once(scene, view, limit):
    items = walk(getattr(browse, view), limit, queue=scene["queue"])
    expected = {"pending": scene["pending"], "scheduled": scene["scheduled"],
                "failed": scene["failed"], "running": scene["running"],
                "locked": ["slow-0", "slow-1"],
                "processes": [scene["queue"].process_id],
                "schedules": ["nightly", "hourly"]}[view]
    got = ids_of(view, items)
    assert len(got) == len(set(got))
    assert sorted(got) == sorted(expected)
    assert all(0 <= item.get("partition", 0) < scene["partitions"] for item in items)


def test_pending_lists_jobs_next_to_run_first(scene, r):
    page = browse.pending(scene["queue"])
    assert page.total == 4 and page.cursor is None
    assert {item["state"] for item in page.items} == {"pending"}
    if scene["partitions"] == 1:
        prefix = scene["queue"].keys.prefix
        assert [item["id"] for item in page.items] == [x.decode() for x in queued_ids(r, prefix)]


def test_failed_is_newest_first_with_error_text_cut_and_filters_by_task(scene, r):
    queue = scene["queue"]
    page = browse.failed(queue)
    assert page.total == 5
    if scene["partitions"] == 1:
        oldest_first = [x.decode() for x in r.lrange(queue.keys.failed, 0, -1)]
        assert [item["id"] for item in page.items] == oldest_first[::-1]
    for item in page.items:
        assert "<b>" in queue.get_job(item["id"]).error  # a traceback, longer than a row shows
        error = queue.get_job(item["id"]).error
        assert item["error"] == "..." + error[-browse.ERROR_CHARS:]    # the end says what
        assert item["summary"] == error.rstrip().splitlines()[-1][:browse.ERROR_CHARS]
        assert item["summary"].startswith("ValueError")
        assert item["ended_ms"] > 0 and item["attempts"] == 1
    only_b = walk(browse.failed, 1, queue=queue, task="filters.b")
    assert sorted(i["id"] for i in only_b) == sorted(scene["failed"][1::2])
    assert {i["task"] for i in only_b} == {"filters.b"}
    assert browse.failed(queue, task="filters.b").total is None
    assert browse.failed(queue, task="no.such").items == []
    assert browse.failed_tasks(queue) == ["filters.a", "filters.b"]
    assert browse.count_matching(queue, "failed", "filters.a") == 3
    assert browse.count_matching(queue, "failed") == 5


def test_running_shows_process_resource_age_and_heartbeat(scene):
    queue = scene["queue"]
    items = browse.running(queue).items
    assert sorted(i["id"] for i in items) == sorted(scene["running"])
    for item in items:
        assert item["process"] == queue.process_id
        assert item["task"] == "fault.slow" and item["resource"].startswith("slow-")
        assert item["pid"] > 0 and item["host"]
        assert 0 <= item["age"] < 120 and 0 <= item["last_heartbeat"] < 10
        assert item["attempts"] == 1 and item["timeout"] > 0


def test_locked_shows_holder_and_who_waits_and_waiting_behind_lists_them(scene):
    queue = scene["queue"]
    page = browse.locked(queue)
    assert page.total == 2
    by_resource = {item["resource"]: item for item in page.items}
    assert by_resource["slow-0"]["holder"] == scene["running"][0]
    assert by_resource["slow-0"]["holder_state"] == "active"
    assert by_resource["slow-0"]["waiting"] == 3
    assert by_resource["slow-0"]["next"] == scene["waiting"]
    assert by_resource["slow-1"]["waiting"] == 0 and by_resource["slow-1"]["next"] == []
    behind = walk(browse.waiting_behind, 2, queue=queue, resource="slow-0")
    assert [item["id"] for item in behind] == scene["waiting"]
    assert {item["state"] for item in behind} == {"waiting"}
    assert browse.waiting_behind(queue, "slow-0").total == 3
    assert browse.waiting_behind(queue, "nobody").items == []


def test_scheduled_schedules_and_processes_pages(scene):
    queue = scene["queue"]
    due = [item["due_ms"] for item in browse.scheduled(queue).items]
    if scene["partitions"] == 1:
        assert due == sorted(due)
    listed = {s["name"]: s for s in browse.schedules(queue).items}
    assert listed["nightly"]["cron"] == "0 3 * * *" and listed["nightly"]["resource_id"] is None
    assert listed["hourly"]["every"] == 3600 and listed["hourly"]["resource_id"] == "hr"
    assert all(s["next_run"] > 0 and "params" not in s for s in listed.values())
    [process] = browse.processes(queue).items
    assert process["id"] == queue.process_id and process["running"] == 2
    assert process["role"] == "worker" and process["capacity"] == 2
    assert process["last_heartbeat"] < 10 and process["started_ms"] > 0


def test_job_gives_one_job_in_full_with_params_as_text(scene):
    queue = scene["queue"]
    detail = browse.job(queue, scene["failed"][1])
    assert detail["state"] == "failed" and detail["task"] == "filters.b"
    assert detail["params"].startswith("{'fail': '<b>1</b>") and detail["resource"] == "fr"
    assert detail["record"]["state"] == "failed" and "params" not in detail["record"]
    assert browse.job(queue, "no-such-job") is None


# -- bad input and garbage -------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 501, True, "5", None, 2.0])
def test_a_limit_out_of_range_is_refused(scene, limit):
    with pytest.raises(ValueError, match="limit must be an int from 1 to 500"):
        browse.pending(scene["queue"], limit=limit)


@pytest.mark.parametrize("view", PAGES)
@pytest.mark.parametrize("cursor", ["", "garbage", "pending:0:0", "pending:x:0:0",
                                    "pending:0:0:-1", "pending:99:0:0", "locked:0:0:0:0:0",
                                    12])
def test_a_bad_cursor_is_refused_with_a_clear_message(scene, view, cursor):
    with pytest.raises(ValueError, match="bad cursor"):
        getattr(browse, view)(scene["queue"], cursor=cursor)


def test_bad_filters_and_views_are_refused(scene):
    queue = scene["queue"]
    for call in (lambda: browse.failed(queue, task=""), lambda: browse.failed(queue, task=3),
                 lambda: browse.waiting_behind(queue, ""),
                 lambda: browse.count_matching(queue, "running"),
                 lambda: browse.cancel_all(queue, "failed"),
                 lambda: browse.job(queue, "")):
        with pytest.raises(ValueError):
            call()


def test_ids_without_a_record_in_the_lists_do_not_break_a_page(make_queue, r):
    queue = make_queue()
    real = queue.submit_job("t.x")
    keys = queue.keys
    r.lpush(keys.pending, "ghost-1")
    r.rpush(keys.failed, "ghost-2")
    r.zadd(keys.delayed, {"ghost-3": 1})
    r.set(keys.job("ghost-4"), "not a hash")
    r.lpush(keys.pending, "ghost-4")
    pending = browse.pending(queue).items
    assert [item["id"] for item in pending] == [real, "ghost-1", "ghost-4"]
    assert pending[1]["state"] == "missing" and pending[1]["task"] is None
    assert browse.failed(queue).items[0]["id"] == "ghost-2"
    assert browse.scheduled(queue).items[0]["id"] == "ghost-3"
    assert browse.failed(queue, task="t.x").items == []
    assert browse.count_matching(queue, "pending", "t.x") == 1


# -- actions -------------------------------------------------------------------


@pytest.fixture(params=[1, 3], ids=["partitions=1", "partitions=3"])
def failed_queue(request, make_queue):
    """A queue whose worker failed 4 filters.a and 2 filters.b jobs, then stopped."""
    queue = make_queue("filters", partitions=request.param, worker_count=4)
    queue.start()
    ids = fail_jobs(queue, [("filters.a", None)] * 4 + [("filters.b", None)] * 2)
    queue.shutdown(timeout=1)
    reader = make_queue(partitions=request.param)
    return reader, ids


def state(queue, job_id):
    job = queue.get_job(job_id)
    return None if job is None else job.state


def test_retry_and_delete_act_on_failed_jobs_by_id(failed_queue):
    queue, ids = failed_queue
    assert browse.retry(queue, [ids[0], ids[1], "unknown"]) == 2
    assert state(queue, ids[0]) == state(queue, ids[1]) == "pending"
    assert browse.delete(queue, [ids[2], ids[0]]) == 1  # ids[0] is no longer failed
    assert state(queue, ids[2]) is None
    assert browse.count_matching(queue, "failed") == 3


def test_bulk_retry_and_delete_act_on_the_filtered_set(failed_queue):
    queue, ids = failed_queue
    assert browse.count_matching(queue, "failed", "filters.b") == 2
    assert browse.retry_all_failed(queue, "filters.b") == 2
    assert [state(queue, i) for i in ids[4:]] == ["pending", "pending"]
    assert browse.count_matching(queue, "failed", "filters.b") == 0
    assert browse.delete_all_failed(queue, "filters.a") == 4
    assert browse.counts(queue)["failed"] == 0 and state(queue, ids[0]) is None


def test_cancel_by_id_and_cancel_all_of_a_view(make_queue):
    for partitions in (1, 3):
        queue = make_queue(partitions=partitions, namespace="c" + uuid.uuid4().hex[:10])
        now = queue.submit_jobs([{"task_id": "t.a" if n % 2 else "t.b"} for n in range(6)])
        later = queue.submit_jobs([{"task_id": "t.a", "delay": 600} for n in range(3)])
        assert browse.cancel(queue, [now[0], "unknown"]) == 1
        assert state(queue, now[0]) == "cancelled"
        assert browse.count_matching(queue, "pending", "t.a") == 3
        assert browse.cancel_all(queue, "pending", task="t.a") == 3
        assert [state(queue, i) for i in now] == ["cancelled", "cancelled", "pending",
                                                  "cancelled", "pending", "cancelled"]
        left = [item["id"] for item in browse.pending(queue).items]
        assert sorted(left) == sorted([now[2], now[4]])
        if partitions == 1:
            assert left == [now[2], now[4]]  # next to run first
        assert browse.count_matching(queue, "scheduled") == 3
        assert browse.cancel_all(queue, "scheduled") == 3
        assert {state(queue, i) for i in later} == {"cancelled"}
        assert browse.scheduled(queue).items == [] and browse.counts(queue)["scheduled"] == 0


# -- bounded walks -----------------------------------------------------------------


@pytest.mark.parametrize("partitions", [1, 3])
def test_walks_over_big_hashes_and_lists_visit_each_item_once(make_queue, partitions):
    """300 held resources: HSCAN of a real hash table (not the small-hash
    encoding, which answers in one batch), paged 7 at a time; the pending
    list, paged across chunks."""
    queue = make_queue(partitions=partitions)
    ids = queue.submit_jobs([{"task_id": "t.a", "resource_id": f"res-{n}"} for n in range(300)])
    locked = walk(browse.locked, 7, queue=queue)
    assert sorted(item["resource"] for item in locked) == sorted(f"res-{n}" for n in range(300))
    assert {item["holder_state"] for item in locked} == {"pending"}
    assert sorted(item["id"] for item in walk(browse.pending, 7, queue=queue)) == sorted(ids)
    assert browse.locked(queue).total == 300 and browse.pending(queue).total == 300


def test_a_filtered_page_that_runs_out_of_budget_returns_a_cursor_to_go_on(make_queue,
                                                                           monkeypatch):
    queue = make_queue("filters", worker_count=4)
    queue.start()
    ids = fail_jobs(queue, [("filters.a", None)] * 9 + [("filters.b", None)])
    monkeypatch.setattr(browse, "SCAN_PER_PAGE", 3)  # three slots of the failed list per page
    pages, found, cursor = 0, [], None
    while True:
        page = browse.failed(queue, task="filters.b", cursor=cursor)
        pages, found, cursor = pages + 1, found + page.items, page.cursor
        if cursor is None:
            break
    assert pages == 4  # 10 slots, 3 a page; a page may come back empty with a cursor
    assert [item["id"] for item in found] == [ids[-1]] == [
        i for i in ids if queue.get_job(i).task_id == "filters.b"]
    assert len(walk(browse.failed, 50, queue=queue)) == 10


def test_pages_and_actions_run_on_a_redis_cluster(redis_cluster, namespace):
    """Three partitions spread over the cluster's masters: each page's
    script runs on the node that serves its partition."""
    queue = GreenQueue(redis_cluster.url, namespace=namespace, partitions=3)
    try:
        held = queue.submit_jobs([{"task_id": "t.a", "resource_id": f"res-{n}"}
                                  for n in range(12)])
        behind = queue.submit_jobs([{"task_id": "t.b", "resource_id": "res-0"}] * 2)
        later = queue.submit_jobs([{"task_id": "t.a", "delay": 600}] * 4)
        assert sorted(i["id"] for i in walk(browse.pending, 5, queue=queue)) == sorted(held)
        assert sorted(i["resource"] for i in walk(browse.locked, 5, queue=queue)) == \
            sorted(f"res-{n}" for n in range(12))
        assert [i["id"] for i in browse.waiting_behind(queue, "res-0").items] == behind
        assert sorted(i["id"] for i in walk(browse.scheduled, 3, queue=queue)) == sorted(later)
        assert browse.count_matching(queue, "scheduled", "t.a") == 4
        assert browse.cancel_all(queue, "scheduled") == 4
        assert browse.counts(queue)["scheduled"] == 0
    finally:
        queue.shutdown()
