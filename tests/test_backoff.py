"""Retry back-off end to end, with real processes: a failed job waits its
task's back-off as "scheduled", holding its resource, so later jobs of that
resource stay behind it (across child processes); a job whose process was
killed (SIGKILL) gets its task's back-off from a stale flush in a process
that does not know the task. Each run logs its span (start, end by Redis'
clock) to a Redis list (tests/tasks/backoff_spans.py)."""

from __future__ import annotations

import json
import signal

from conftest import wait_until
from test_master import greenq_run  # noqa: F401 - the fixture

SPANS = "backoff_spans"


def spans(r, log) -> list[tuple]:
    """(key, start ms, end ms, pid, outcome) of every run, in the order they ended."""
    return [tuple(json.loads(x)) for x in r.lrange(log, 0, -1)]


def params(redis_url, log, key, **extra) -> dict:
    return {"url": redis_url, "log": log, "key": key, **extra}


def now_ms(r) -> int:
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


def test_a_failed_job_waits_its_back_off_as_scheduled_then_runs_again(make_queue, redis_url,
                                                                      namespace, r):
    q = make_queue(SPANS, worker_count=4)
    retried, succeeded = [], []
    q.on("job_retry", lambda job: retried.append((job.id, job.state, job.retries)))
    q.on("job_success", lambda job: succeeded.append((job.id, job.attempts)))
    q.start()
    log = namespace + ":spans"
    job = q.submit_job("backoff.flaky", resource_id="r", retries=2,
                       params=params(redis_url, log, "a", fail_runs=1))
    wait_until(lambda: retried, timeout=10)
    assert retried == [(job, "scheduled", 1)]
    # Waiting (0.2 to 0.4 s): scheduled, counted, no attempt more, resource held.
    record = r.hgetall(q.keys.job(job))
    assert record[b"state"] == b"scheduled" and record[b"attempts"] == b"1"
    assert q.stats()["scheduled"] == 1 and r.hget(q.keys.locks, "r") == job.encode()
    wait_until(lambda: succeeded, timeout=10)
    assert succeeded == [(job, 2)]
    (first, second) = spans(r, log)
    assert first[4] == "fail" and second[4] == "ok"
    assert second[1] - first[2] >= 200 - 5       # at least d/2 of retry_delay 0.4 s
    assert q.stats()["scheduled"] == 0


def test_a_task_without_retry_delay_retries_at_once(make_queue, redis_url, namespace, r):
    q = make_queue(SPANS)
    retried = []
    q.on("job_retry", lambda job: retried.append(job.state))
    q.start()
    log = namespace + ":spans"
    q.submit_job("backoff.at_once", retries=1, params=params(redis_url, log, "a", fail_runs=1))
    wait_until(lambda: len(spans(r, log)) == 2, timeout=10)
    assert retried == ["pending"] and r.zcard(q.keys.delayed) == 0


def test_later_jobs_of_a_resource_stay_behind_a_job_waiting_out_its_back_off_across_children(
        make_queue, redis_url, namespace, r):
    q = make_queue(SPANS, child_process_count=2, worker_count=4)
    retried = []
    q.on("job_retry", lambda job: retried.append(job.state))   # forwarded by the children
    q.start()
    log = namespace + ":spans"
    first = q.submit_job("backoff.flaky", resource_id="r", retries=3,
                         params=params(redis_url, log, "first", fail_runs=2))
    later = [q.submit_job("backoff.flaky", resource_id="r",
                          params=params(redis_url, log, f"later{n}")) for n in range(4)]
    other = q.submit_job("backoff.flaky", resource_id="s", params=params(redis_url, log, "other"))
    wait_until(lambda: len(spans(r, log)) == 8, timeout=30)
    runs = spans(r, log)
    by_resource = [run for run in runs if run[0] != "other"]
    assert [run[0] for run in by_resource] == ["first"] * 3 + [f"later{n}" for n in range(4)]
    assert [run[4] for run in by_resource] == ["fail", "fail", "ok"] + ["ok"] * 4
    for before, after in zip(by_resource, by_resource[1:]):
        assert after[1] >= before[2], (before, after)   # no overlap, in order
    # The back-offs: 0.2-0.4 s after the first failure, 0.4-0.8 s after the second.
    assert by_resource[1][1] - by_resource[0][2] >= 200 - 5
    assert by_resource[2][1] - by_resource[1][2] >= 400 - 5
    records = [r.hget(q.keys.job(job_id), "state") for job_id in (first, *later, other)]
    assert all(state in (b"succeeded", None) for state in records)
    assert r.hlen(q.keys.locks) == 0
    wait_until(lambda: len(retried) == 2, timeout=10)
    assert retried == ["scheduled", "scheduled"]


def test_a_dead_job_gets_its_task_s_back_off_from_a_flush_that_does_not_know_the_task(
        greenq_run, make_queue, redis_url, namespace, r):  # noqa: F811
    log = namespace + ":spans"
    victim = greenq_run(SPANS + ".py", "-w", "2")
    admin = make_queue()                               # no task: it cannot know the policy
    retried = []
    admin.on("job_retry", lambda job: retried.append((job.id, job.state)))
    job = admin.submit_job("backoff.hang", resource_id="r", retries=1,
                           params=params(redis_url, log, "dead", hang=True))
    behind = admin.submit_job("backoff.hang", resource_id="r",
                              params=params(redis_url, log, "behind"))
    wait_until(lambda: r.llen(log + ":hung"), timeout=30)
    assert r.hget(admin.keys.retry_policies, "backoff.hang") == b"2000 3.0 60000"
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(10)
    assert victim.process.returncode == -signal.SIGKILL
    # The task's timeout is 1 s: wait until the flush finds it dead.
    flushed_at = None
    def flushed():
        nonlocal flushed_at
        flushed_at = now_ms(r)
        return admin.force_flush_stale_jobs()
    assert wait_until(flushed, timeout=10, interval=0.2) == 1
    assert retried == [(job, "scheduled")]
    due = r.zscore(admin.keys.delayed, job)
    assert 1000 - 5 <= due - flushed_at <= 2000 + 50   # [d/2, d] for retry_delay 2 s
    record = r.hgetall(admin.keys.job(job))
    assert record[b"state"] == b"scheduled" and record[b"attempts"] == b"1"
    assert record[b"retries"] == b"0" and b"stale" in record[b"error"]
    assert r.hget(admin.keys.locks, "r") == job.encode()
    assert admin.stats()["scheduled"] == 1

    greenq_run(SPANS + ".py", "-w", "2")
    wait_until(lambda: len(spans(r, log)) == 2, timeout=30)
    (again, after) = spans(r, log)
    assert again[0] == "dead" and again[4] == "ok" and after[0] == "behind"
    assert again[1] >= due - 5 and after[1] >= again[2]
    assert r.hget(admin.keys.job(job), "attempts") in (b"2", None)
