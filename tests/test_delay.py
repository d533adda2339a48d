"""Delayed jobs and rate limits through the public API, with real workers
(issue 14). Times are read from the job records, which the scripts stamp
with Redis' clock."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import gevent
import pytest

import greenq
from conftest import TASKS, wait_until

pytestmark = pytest.mark.timeout(120)


def redis_ms(r) -> int:
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


def started_ms(r, queue, job_id) -> int:
    return int(r.hget(queue.keys.job(job_id), "started"))


def ended(queue, job_id) -> bool:
    job = queue.get_job(job_id)
    return job is not None and job.state == "succeeded"


def test_a_delayed_job_is_scheduled_then_runs_at_its_time_by_redis_clock(make_queue, r):
    queue = make_queue("time_tasks")
    queue.start()
    gevent.sleep(0.2)   # idle: the worker waits in Redis
    before = redis_ms(r)
    job_id = queue.submit_job("time.echo", params="later", delay=0.4)
    job = queue.get_job(job_id)
    assert job.state == "scheduled" and queue.stats()["scheduled"] == 1
    wait_until(lambda: ended(queue, job_id), timeout=10)
    assert started_ms(r, queue, job_id) >= before + 400
    assert queue.get_job(job_id).result == "later" and queue.stats()["scheduled"] == 0


def test_idle_workers_start_delayed_jobs_about_on_time_not_at_their_next_wait(make_queue, r):
    """Redis ends an idle worker's 1 s wait late and coarsely; the wake-up
    timer starts each job well before that (generous bound: 0.5 s)."""
    queue = make_queue("time_tasks")
    queue.start()
    gevent.sleep(0.3)
    base = redis_ms(r)
    due = {queue.submit_job("time.echo", params=n, run_at=(base + 300 + 170 * n) / 1000): base
           + 300 + 170 * n for n in range(5)}
    wait_until(lambda: all(ended(queue, job_id) for job_id in due), timeout=10)
    late = [started_ms(r, queue, job_id) - at for job_id, at in due.items()]
    assert all(0 <= ms < 500 for ms in late), late


def test_run_at_takes_an_aware_datetime_or_epoch_seconds_and_a_past_time_runs_now(make_queue, r):
    queue = make_queue("time_tasks")
    soon = datetime.now(timezone.utc) + timedelta(seconds=60)
    by_datetime = queue.submit_job("time.echo", run_at=soon)
    score = r.zscore(queue.keys.delayed, by_datetime)
    assert abs(score - soon.timestamp() * 1000) <= 1
    by_epoch = queue.submit_job("time.echo", run_at=soon.timestamp() + 1)
    assert abs(r.zscore(queue.keys.delayed, by_epoch) - (soon.timestamp() + 1) * 1000) <= 1
    past = queue.submit_job("time.echo", run_at=datetime.now(timezone.utc) - timedelta(hours=1))
    assert queue.get_job(past).state == "pending"
    assert queue.stats()["scheduled"] == 2


def test_a_delayed_job_takes_its_place_in_its_resources_order_only_when_due(make_queue, r):
    queue = make_queue("time_tasks")
    queue.start()
    gevent.sleep(0.2)
    delayed = queue.submit_job("time.echo", resource_id="r", params="delayed", delay=0.5)
    first = queue.submit_job("time.echo", resource_id="r", params="first")
    second = queue.submit_job("time.echo", resource_id="r", params="second")
    wait_until(lambda: all(ended(queue, j) for j in (delayed, first, second)), timeout=10)
    order = sorted((first, second, delayed), key=lambda j: started_ms(r, queue, j))
    assert order == [first, second, delayed]


def test_a_delayed_job_cancelled_while_it_waits_never_runs(make_queue, r):
    queue = make_queue("time_tasks")
    queue.start()
    job_id = queue.submit_job("time.echo", resource_id="r", params="never", delay=0.3)
    assert queue.cancel(job_id) is True
    after = queue.submit_job("time.echo", resource_id="r", params="after")
    wait_until(lambda: ended(queue, after), timeout=10)
    gevent.sleep(0.6)
    assert queue.get_job(job_id).state == "cancelled"
    assert r.zcard(queue.keys.delayed) == 0 and queue.stats()["scheduled"] == 0


@pytest.mark.parametrize("kwargs, error, text", [
    ({"delay": -1}, greenq.ParamsError, "delay"),
    ({"delay": math.nan}, greenq.ParamsError, "delay"),
    ({"delay": math.inf}, greenq.ParamsError, "delay"),
    ({"delay": "5"}, TypeError, "delay"),
    ({"delay": True}, TypeError, "delay"),
    ({"delay": 1, "run_at": 2}, greenq.ParamsError, "not both"),
    ({"run_at": datetime(2030, 1, 1)}, greenq.ParamsError, "aware"),
    ({"run_at": "2030-01-01"}, TypeError, "run_at"),
    ({"run_at": -5}, greenq.ParamsError, "run_at"),
    ({"delay": 1, "coalesce": True, "resource_id": "r"}, greenq.ParamsError, "coalesce"),
])
def test_bad_time_arguments_raise_a_clear_error_and_write_nothing(make_queue, r, namespace,
                                                                   kwargs, error, text):
    queue = make_queue()
    with pytest.raises(error, match=text):
        queue.submit_job("time.echo", **kwargs)
    with pytest.raises(error, match=text):
        queue.submit_jobs([{"task_id": "time.echo"}, {"task_id": "time.echo", **kwargs}])
    assert list(r.scan_iter(match=f"{namespace}:*")) == []


def test_a_rate_limited_task_never_starts_more_than_its_limit_in_any_window(make_queue, r):
    queue = make_queue("time_tasks", worker_count=20)
    problems = []
    queue.on("error", problems.append)
    queue.on("job_retry", problems.append)
    queue.start()
    ids = queue.submit_jobs([{"task_id": "time.limited", "params": n} for n in range(12)])
    wait_until(lambda: all(ended(queue, job_id) for job_id in ids), timeout=30)
    starts = sorted(started_ms(r, queue, job_id) for job_id in ids)
    most = max(sum(1 for t in starts if s <= t < s + 1000) for s in starts)
    assert most <= 5
    assert starts[-1] - starts[0] >= 2000       # 12 starts at 5 a second span two periods
    assert problems == []
    assert all(queue.get_job(job_id).attempts == 1 for job_id in ids)


@pytest.mark.parametrize("attributes, text", [
    ("rate_limit = '10/d'", "rate_limit"),
    ("rate_limit = '0/s'", "rate_limit"),
    ("rate_limit = 5", "rate_limit"),
    ("retry_delay = -1", "retry_delay"),
    ("retry_backoff = 0.5", "retry_backoff"),
    ("retry_delay_max = float('inf')", "retry_delay_max"),
    ("retry_delay = 10\nretry_delay_max = 5", "retry_delay_max"),
])
def test_bad_time_attributes_are_refused_at_registration(make_queue, tmp_path, attributes, text):
    path = tmp_path / "bad_time_task.py"
    path.write_text(f"id = 'bad.time'\n{attributes}\n\ndef perform(params):\n    pass\n")
    queue = make_queue()
    with pytest.raises(greenq.TaskDefinitionError, match=text) as caught:
        queue.register_task(str(path))
    assert "bad.time" in str(caught.value)


def test_cli_submit_delay_schedules_the_job_and_refuses_a_negative_one(redis_url, namespace, r):
    common = ["--redis-url", redis_url, "--namespace", namespace]
    done = subprocess.run([sys.executable, "-m", "greenq", "submit", "time.echo", "--delay", "30",
                           *common], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert r.zscore(f"{namespace}:{{default}}:delayed", job_id) is not None
    bad = subprocess.run([sys.executable, "-m", "greenq", "submit", "time.echo", "--delay", "-1",
                          *common], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "delay" in bad.stderr
    assert r.zcard(f"{namespace}:{{default}}:delayed") == 1
