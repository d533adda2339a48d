"""Rolling deploys: a job whose task the fetching worker does not know is
given back, with a back-off and no attempt counted, for a worker that knows
the task; it fails only after `unknown_task_grace` with no such worker.
Two queues with different task sets stand for an old and a new worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import gevent
import pytest

import greenq
from conftest import TASKS, wait_until
from queue_state import unfinished_records

pytestmark = pytest.mark.timeout(120)

OLD, NEW = "core.echo", "echo"  # the old worker knows core.echo only, the new one echo only


def recorder(queue, *events):
    seen = {event: [] for event in events}
    for event in events:
        queue.on(event, seen[event].append)
    return seen


def lease_of(r, queue, job_id) -> int:
    """The job's last lease token: 0 until it was first fetched."""
    return int(r.hget(queue.keys.job(job_id), "lease") or 0)


def fetched_again(r, queue, job_id) -> bool:
    """Fetched after a give-back: the last start is later than the first
    give-back (lease tokens are shared by the queue, so they count nothing)."""
    started, since = r.hmget(queue.keys.job(job_id), "started", "unknown_since")
    return since is not None and started is not None and int(started) > int(since)


def starts_seen(r, queue, job_id, seconds: float) -> int:
    """How many distinct fetches of the job a watcher sees over `seconds`."""
    starts = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        starts.add(r.hget(queue.keys.job(job_id), "started"))
        gevent.sleep(0.01)
    return len(starts)


def ran_in_order(r, queue, job_ids) -> bool:
    """By the records' Redis-clock times: each job started once the one
    before it had ended (success events of two processes arrive in any order)."""
    times = [r.hmget(queue.keys.job(job_id), "started", "ended") for job_id in job_ids]
    return all(int(later[0]) >= int(earlier[1]) for earlier, later in zip(times, times[1:]))


def test_jobs_of_a_task_only_a_new_worker_knows_wait_for_it_then_run_in_resource_order(
        make_queue, r):
    old = make_queue("core_echo", unknown_task_grace=60)
    old_seen = recorder(old, "job_success", "job_fail", "job_retry", "error")
    finished = []  # (queue, job id) in the order they succeeded, both queues
    old.on("job_success", lambda job: finished.append(("old", job.id)))
    old.start()
    submitter = make_queue()
    new_jobs = submitter.submit_jobs(
        [{"task_id": NEW, "resource_id": "r", "params": n, "retries": 2} for n in range(3)]
        + [{"task_id": NEW, "params": "free", "retries": 2}])
    behind = submitter.submit_job(OLD, resource_id="r", params="behind")

    # The old worker fetches the head of r (and the free job), gives them
    # back, and fetches them again after a back-off: no failure, no attempt.
    wait_until(lambda: fetched_again(r, old, new_jobs[0]) and fetched_again(r, old, new_jobs[3]),
               timeout=15)
    assert starts_seen(r, old, new_jobs[0], 1.5) <= 3  # a back-off, not a fetch loop
    assert old_seen == {"job_success": [], "job_fail": [], "job_retry": [], "error": []}
    stats = old.stats()
    assert (stats["failed"], stats["waiting"], stats["active"]) == (0, 3, 0)
    assert stats["scheduled"] + stats["pending"] == 2
    for job_id in new_jobs:
        record = r.hgetall(old.keys.job(job_id))
        assert record.get(b"attempts", b"0") == b"0" and record[b"retries"] == b"2"
    assert r.hget(old.keys.locks, "r") == new_jobs[0].encode()   # it kept its place on r

    new = make_queue("echo", unknown_task_grace=60)
    new.on("job_success", lambda job: finished.append(("new", job.id)))
    new.start()

    wait_until(lambda: len(finished) == 5, timeout=15)
    assert sorted(finished) == sorted([("new", job_id) for job_id in new_jobs] + [("old", behind)])
    assert ran_in_order(r, old, new_jobs[:3] + [behind])
    assert old_seen["job_fail"] == [] and old_seen["error"] == []
    stats = old.stats()
    assert (stats["pending"], stats["scheduled"], stats["waiting"], stats["failed"]) == (0, 0, 0, 0)
    assert r.hlen(old.keys.locks) == 0 and not unfinished_records(r, old.keys.prefix)


def test_a_job_no_worker_knows_fails_after_the_grace_naming_the_task_and_the_grace(make_queue, r):
    old = make_queue("core_echo", unknown_task_grace=1.5)
    seen = recorder(old, "job_success", "job_fail", "job_retry", "error")
    old.start()
    started = time.monotonic()
    lost = old.submit_job(NEW, resource_id="r", params={"x": 1}, retries=3)
    behind = old.submit_job(OLD, resource_id="r", params="behind")

    wait_until(lambda: lease_of(r, old, lost) >= 1, timeout=10)
    assert seen["job_fail"] == []   # given back, not failed, on the first fetch
    wait_until(lambda: seen["job_fail"], timeout=15)
    waited = time.monotonic() - started

    [failure] = seen["job_fail"]
    assert failure.id == lost and failure.retries == 3   # no retry spent: none would help
    for text in ("UnknownTaskError", repr(NEW), "unknown_task_grace", "1.5 s"):
        assert text in failure.error
    [error] = seen["error"]
    assert isinstance(error, greenq.UnknownTaskError) and repr(NEW) in str(error)
    assert waited >= 1.0   # the grace (1.5 s by Redis' clock) passed first
    [failed] = old.failed_jobs()
    assert failed.id == lost and failed.attempts == 0 and failed.params == {"x": 1}
    # Its resource went to the job behind it.
    wait_until(lambda: [job.id for job in seen["job_success"]] == [behind], timeout=10)
    assert seen["job_retry"] == []
    record = r.hgetall(old.keys.job(lost))
    assert b"unknown_since" not in record   # a retry of the failed job starts a new grace


def test_greenq_run_takes_the_grace_and_its_children_apply_it(make_queue, r, redis_url, namespace,
                                                                tmp_path):
    out = open(tmp_path / "run.log", "wb")
    run = subprocess.Popen(
        [sys.executable, "-m", "greenq", "run", os.path.join(TASKS, "core_echo.py"), "-c", "1",
         "--unknown-task-grace", "1", "--redis-url", redis_url, "--namespace", namespace],
        stdout=out, stderr=subprocess.STDOUT)
    try:
        submitter = make_queue()
        lost = submitter.submit_job(NEW)
        wait_until(lambda: r.llen(submitter.keys.failed) == 1, timeout=30)
        error = r.hget(submitter.keys.job(lost), "error").decode()
        assert repr(NEW) in error and "unknown_task_grace" in error and "1 s" in error, error
    finally:
        run.terminate()
        assert run.wait(30) == 0
        out.close()


@pytest.mark.parametrize("grace", [-1, float("nan"), float("inf"), "60", True, None])
def test_a_bad_unknown_task_grace_is_refused_with_a_clear_error(grace):
    with pytest.raises(ValueError, match="unknown_task_grace must be a number of seconds >= 0"):
        greenq.GreenQueue(unknown_task_grace=grace)
