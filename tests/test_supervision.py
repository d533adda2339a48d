"""The worker's own loops (fetch, commit) survive an unexpected exception:
it is reported as an `error` event, the loop starts again, and no job is
lost or run twice. Redis is real; the fault is injected by making a Python
call the loop makes raise once."""

from __future__ import annotations

import os

import gevent
import pytest

from conftest import TASKS, wait_until

ECHO = os.path.join(TASKS, "echo.py")
HANG = os.path.join(TASKS, "fault_hang.py")


def raising_once(real, message):
    calls = []

    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError(message)
        return real(*args, **kwargs)

    return call


@pytest.mark.timeout(60)
def test_a_fetch_loop_that_raises_is_reported_restarted_and_its_leased_jobs_still_run_once(
        make_queue, monkeypatch):
    queue = make_queue(ECHO, worker_count=4)
    errors, done = [], []
    queue.on("error", errors.append)
    queue.on("job_success", done.append)
    queue.start()
    [task] = queue.registry.tasks.values()
    seen = task.perform.__globals__["seen"]
    monkeypatch.setattr(queue.registry, "get",
                        raising_once(queue.registry.get, "injected: task lookup failed"))

    ids = queue.submit_jobs([{"task_id": "echo", "params": n} for n in range(5)])

    wait_until(lambda: len(done) == 5, timeout=20)
    assert sorted(job.id for job in done) == sorted(ids)
    assert sorted(seen) == list(range(5))
    [error] = errors
    assert "fetch loop" in str(error) and "injected: task lookup failed" in str(error)
    stats = queue.stats()
    assert (stats["pending"], stats["active"], stats["failed"]) == (0, 0, 0)


@pytest.mark.timeout(60)
def test_a_commit_loop_that_raises_is_reported_restarted_and_heartbeats_go_on(
        make_queue, monkeypatch, r, redis_url, namespace):
    queue = make_queue(HANG, worker_count=4)  # the task's timeout is 0.5 s
    other = make_queue()  # another process' stale flush
    errors, done = [], []
    queue.on("error", errors.append)
    queue.on("job_success", done.append)
    queue.start()
    slow_key, quick_key = namespace + ":slow", namespace + ":quick"
    slow = queue.submit_job("fault.hang", params={"url": redis_url, "key": slow_key,
                                                  "mode": "sleep", "seconds": 3})
    wait_until(lambda: r.llen(slow_key + ":started") == 1)
    monkeypatch.setattr(queue.broker, "run_batch",
                        raising_once(queue.broker.run_batch, "injected: commit failed"))

    quick = queue.submit_job("fault.hang", params={"url": redis_url, "key": quick_key})
    wait_until(lambda: quick in [job.id for job in done], timeout=10)
    gevent.sleep(1.0)  # twice the task's timeout: without heartbeats it is stale now
    assert other.force_flush_stale_jobs() == 0

    wait_until(lambda: slow in [job.id for job in done], timeout=10)
    assert sorted(job.id for job in done) == sorted([slow, quick])
    assert r.get(slow_key + ":runs") == b"1" and r.get(quick_key + ":runs") == b"1"
    [error] = errors
    assert "commit loop" in str(error) and "injected: commit failed" in str(error)


@pytest.mark.timeout(60)
def test_a_job_whose_error_text_is_not_valid_unicode_still_lands_in_the_failed_queue(make_queue):
    # The text a task's exception gives may hold lone surrogates (a file name
    # that is not UTF-8, through os.fsdecode); Redis takes only bytes.
    queue = make_queue(os.path.join(TASKS, "bad_text.py"), worker_count=2)
    failed, errors = [], []
    queue.on("job_fail", failed.append)
    queue.on("error", errors.append)
    queue.start()

    job_id = queue.submit_job("bad.text")

    wait_until(lambda: failed, timeout=10)
    [job] = failed
    assert job.id == job_id and "cannot open caf\\udce9.txt" in job.error
    [stored] = queue.failed_jobs()
    assert stored.id == job_id and "cannot open caf\\udce9.txt" in stored.error
    assert errors == []
