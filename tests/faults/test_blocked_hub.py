"""A job that blocks the gevent hub (a CPU loop, a blocking call gevent did
not patch) for longer than its task's timeout, and hard time limits.

The blocked job runs in a child process; this test process runs a second
worker whose periodic stale flush would reclaim the job if its process'
heartbeat stopped."""

from __future__ import annotations

import logging
import os

import pytest

from conftest import wait_until
from greenq import TimeLimitExceeded
from greenq.lifeline import STUCK_EXIT_STATUS

BLOCK = 4.0  # seconds the hub stays blocked; the task's timeout is 1 s


def lines(path):
    return open(path).read().splitlines() if os.path.exists(path) else []


def collect(queue, *names):
    seen = {name: [] for name in names}
    for name in names:
        queue.on(name, seen[name].append)
    return seen


@pytest.mark.timeout(90)
@pytest.mark.parametrize("task_id", ["hub.spin", "hub.unpatched_sleep"])
def test_a_job_blocking_the_hub_longer_than_its_timeout_is_not_flushed_and_runs_once(
        make_queue, tmp_path, task_id):
    log_path = str(tmp_path / "runs.log")
    master = make_queue("fault_hub", child_process_count=1, worker_count=4)
    master_events = collect(master, "job_success", "job_retry", "job_fail")
    master.start()
    master.submit_job(task_id, resource_id="r", params={"n": 0, "log": log_path, "seconds": BLOCK})
    wait_until(lambda: "0 start" in lines(log_path), timeout=30)

    flusher = make_queue("fault_hub", worker_count=1, flush_stale_timeout=0.2)
    flusher_events = collect(flusher, "job_success", "job_retry", "job_fail")
    flusher.start()

    wait_until(lambda: master_events["job_success"], timeout=40)
    assert lines(log_path) == ["0 start", "0 end"]
    assert master_events["job_retry"] == master_events["job_fail"] == []
    assert flusher_events["job_retry"] == flusher_events["job_fail"] == []
    stats = master.stats()
    assert (stats["pending"], stats["active"], stats["failed"], stats["waiting"]) == (0, 0, 0, 0)


@pytest.mark.timeout(60)
def test_a_job_past_its_time_limit_that_yields_fails_with_time_limit_exceeded_and_is_retried(
        make_queue, tmp_path):
    log_path = str(tmp_path / "runs.log")
    queue = make_queue("fault_hub", worker_count=2)
    events = collect(queue, "job_success", "job_retry", "job_fail")
    queue.start()
    queue.submit_job("hub.limited_sleep", resource_id="r", retries=1,
                     params={"n": 0, "log": log_path, "seconds": 30})
    wait_until(lambda: events["job_fail"], timeout=30)
    assert len(events["job_retry"]) == 1
    (failed,) = events["job_fail"]
    assert TimeLimitExceeded.__name__ in failed.error and "time limit of 0.5 s" in failed.error
    assert lines(log_path) == ["0 start", "0 start"]  # two runs, each cut short
    assert events["job_success"] == []
    assert queue.stats()["failed"] == 1
    assert queue.stats()["active"] == 0


@pytest.mark.timeout(90)
def test_a_job_past_its_time_limit_on_a_blocked_hub_ends_its_child_which_is_replaced(
        make_queue, tmp_path):
    log_path = str(tmp_path / "runs.log")
    queue = make_queue("fault_hub", child_process_count=1, worker_count=2, flush_stale_timeout=0.2)
    events = collect(queue, "job_success", "job_fail", "child_restart")
    queue.start()
    queue.submit_job("hub.limited_spin", resource_id="r",
                     params={"n": 0, "log": log_path, "seconds": 600})
    wait_until(lambda: events["child_restart"], timeout=40)
    assert events["child_restart"][0]["exitcode"] == STUCK_EXIT_STATUS
    # The master's reclaim fails the job (no retries left), with the reason
    # the lifeline noted before the child ended itself.
    wait_until(lambda: events["job_fail"], timeout=40)
    error = events["job_fail"][0].error
    assert TimeLimitExceeded.__name__ in error and "time limit of 1 s" in error, error
    assert "stale" not in error and "_spin" in error   # where it was stuck
    assert lines(log_path) == ["0 start"]
    assert events["job_success"] == []
    stats = queue.stats()
    assert (stats["pending"], stats["active"], stats["failed"]) == (0, 0, 1)


@pytest.mark.timeout(60)
def test_the_blocked_hub_report_shows_the_stack_of_the_task_blocking_it(
        make_queue, tmp_path, caplog):
    log_path = str(tmp_path / "runs.log")
    queue = make_queue("fault_hub", worker_count=2)   # in this process: its hub blocks
    done = collect(queue, "job_success")["job_success"]
    queue.start()
    with caplog.at_level(logging.WARNING, logger="greenq.lifeline"):
        queue.submit_job("hub.spin", params={"n": 0, "log": log_path, "seconds": 2.0})
        wait_until(lambda: done, timeout=30)
    reports = [r.getMessage() for r in caplog.records
               if r.name == "greenq.lifeline" and "gevent hub blocked" in r.getMessage()]
    assert reports, [r.getMessage() for r in caplog.records]
    assert "(no stack)" not in reports[0]
    assert "fault_hub.py" in reports[0] and "in _spin" in reports[0], reports[0]
