"""Metrics counted in Redis by the scripts that end jobs (include/metrics.lua)
and read back by greenq/metrics.py: in-process and `greenq run` workers, a
SIGKILLed process' jobs counted by the stale flush, partitions summed,
garbage in the hash skipped, and nothing lost when a process restarts."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import TASKS, wait_until
from faults.sidelog import GreenqRun
from greenq import config, metrics, scripts

pytestmark = pytest.mark.timeout(120)


def scrape(queue) -> dict:
    """The /metrics text parsed: {(sample name, frozen labels): value}."""
    body, content_type = metrics.render(queue)
    assert content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = dict(sample.labels)
            labels.pop("queue")
            samples[(sample.name, frozenset(labels.items()))] = sample.value
    return samples


def jobs(samples, task, outcome):
    return samples.get(("greenq_jobs_total", frozenset({("task", task), ("outcome", outcome)})))


def hist(samples, name, task, suffix, le=None):
    labels = {("task", task)} | ({("le", le)} if le else set())
    return samples.get((f"{name}_{suffix}", frozenset(labels)))


def settled(queue) -> bool:
    stats = queue.stats()
    return stats["pending"] == stats["active"] == stats["scheduled"] == stats["waiting"] == 0


def test_lua_and_python_agree_on_the_buckets_and_the_history_length():
    source = scripts._read("include/metrics.lua")
    bounds = re.search(r"BOUNDS_US = \{([^}]*)\}", source).group(1)
    assert tuple(int(x) / 1e6 for x in bounds.split(",")) == config.HISTOGRAM_BOUNDS
    assert int(re.search(r"HISTORY_MINUTES = (\d+)", source).group(1)) == config.HISTORY_MINUTES


def test_every_outcome_is_counted_with_its_duration_and_wait(make_queue):
    q = make_queue(os.path.join(TASKS, "metrics_tasks.py"))
    q.start()
    ok = [q.submit_job("m.ok", params={"sleep": 0.03}) for _ in range(5)]
    failed = [q.submit_job("m.fail", retries=0) for _ in range(2)]
    flaky = q.submit_job("m.flaky", retries=1)
    later = q.submit_job("m.ok", delay=60)
    running = q.submit_job("m.block")
    for job_id in ok + failed + [flaky]:
        q.wait(job_id, timeout=20)
    assert q.cancel(later)
    wait_until(lambda: q.get_job(running).state == "active")
    assert q.cancel(running)
    assert q.wait(running, timeout=20).state == "cancelled"

    samples = scrape(q)
    assert jobs(samples, "m.ok", "succeeded") == 5
    assert jobs(samples, "m.ok", "cancelled") == 1        # cancelled before it ran
    assert jobs(samples, "m.fail", "failed") == 2
    assert jobs(samples, "m.flaky", "retried") == 1 and jobs(samples, "m.flaky", "succeeded") == 1
    assert jobs(samples, "m.block", "cancelled") == 1     # cancelled while it ran
    assert jobs(samples, "m.ok", "failed") == 0           # every outcome shows, zeros too
    duration = "greenq_job_duration_seconds"
    assert hist(samples, duration, "m.ok", "count") == 5
    assert hist(samples, duration, "m.ok", "bucket", "0.01") == 0     # each slept 0.03 s
    assert hist(samples, duration, "m.ok", "bucket", "+Inf") == 5
    assert 0.15 <= hist(samples, duration, "m.ok", "sum") < 5
    assert hist(samples, duration, "m.flaky", "count") == 2            # both runs
    assert hist(samples, duration, "m.block", "count") == 1
    wait = "greenq_job_wait_seconds"
    assert hist(samples, wait, "m.ok", "count") == 5 and hist(samples, wait, "m.ok", "sum") < 10
    assert hist(samples, wait, "m.fail", "count") == 2
    assert samples[("greenq_queue_jobs", frozenset({("state", "failed")}))] == 2
    assert samples[("greenq_workers", frozenset())] == 1


def test_history_counts_this_minute_and_refuses_a_bad_span(make_queue):
    q = make_queue(os.path.join(TASKS, "metrics_tasks.py"))
    q.start()
    for job_id in [q.submit_job("m.ok") for _ in range(3)] + [q.submit_job("m.fail", retries=0)]:
        q.wait(job_id, timeout=20)
    rows = metrics.history(q, minutes=5)
    assert len(rows) == 5 and [b["minute"] - a["minute"] for a, b in zip(rows, rows[1:])] == [60] * 4
    assert abs(rows[-1]["minute"] - time.time()) < 120
    total = {k: sum(row[k] for row in rows) for k in metrics.OUTCOMES}
    assert total == {"succeeded": 3, "failed": 1, "retried": 0, "cancelled": 0}
    for bad in (0, config.HISTORY_MINUTES + 1, "60", True, 1.5):
        with pytest.raises(ValueError, match="minutes must be an int"):
            metrics.history(q, minutes=bad)


def test_a_slot_holding_an_older_minute_is_reset_before_it_counts(make_queue, r):
    q = make_queue(os.path.join(TASKS, "metrics_tasks.py"))
    minute = q.broker.redis_now_ms() // 60000
    slot = minute % config.HISTORY_MINUTES
    # What the same slot held one ring ago: it must neither show now nor add up.
    r.hset(q.keys.history, mapping={f"m{slot}": minute - config.HISTORY_MINUTES,
                                    f"s{slot}": 1000, f"f{slot}": 7})
    q.start()
    q.wait(q.submit_job("m.ok"), timeout=20)
    rows = metrics.history(q, minutes=1)
    if rows[0]["minute"] // 60 == minute:  # the minute did not turn meanwhile
        assert rows[0]["succeeded"] == 1 and rows[0]["failed"] == 0
    assert sum(row["succeeded"] for row in metrics.history(q, minutes=2)) == 1


def test_partitions_are_summed(make_queue):
    q = make_queue(os.path.join(TASKS, "metrics_tasks.py"), partitions=3)
    q.start()
    ids = [q.submit_job("m.ok", resource_id=f"r{i}") for i in range(30)]
    for job_id in ids:
        q.wait(job_id, timeout=20)
    assert len(q.brokers) == 3
    samples = scrape(q)
    assert jobs(samples, "m.ok", "succeeded") == 30
    assert hist(samples, "greenq_job_duration_seconds", "m.ok", "count") == 30
    assert sum(row["succeeded"] for row in metrics.history(q, minutes=2)) == 30


def test_fields_that_are_not_greenqs_are_skipped(make_queue, r):
    q = make_queue(os.path.join(TASKS, "metrics_tasks.py"))
    q.start()
    q.wait(q.submit_job("m.ok"), timeout=20)
    r.hset(q.keys.metrics, mapping={"junk": "1", "o\tsucceeded\tm.ok2": "not a number",
                                    "o\tvanished\tm.ok": "3", "d\t99\tm.ok": "1",
                                    "d\tx\tm.ok": "1"})
    samples = scrape(q)
    assert jobs(samples, "m.ok", "succeeded") == 1
    assert hist(samples, "greenq_job_duration_seconds", "m.ok", "count") == 1


def test_every_process_is_counted_and_a_restart_loses_nothing(tmp_path, redis_url, namespace,
                                                             make_queue):
    q = make_queue()
    run = GreenqRun(tmp_path, redis_url, namespace, "-c", "2", "-w", "10",
                    task_file=os.path.join(TASKS, "proc_outcome.py"))
    try:
        run.wait_ready(2)
        q.submit_jobs([{"task_id": "proc.outcome", "params": {"fail": i % 4 == 0}, "retries": 0}
                       for i in range(40)])
        wait_until(lambda: settled(q), timeout=30)
        run.send(signal.SIGTERM)
        assert run.wait(30) == 0, run.output()
    finally:
        run.kill_all()
    samples = scrape(make_queue())           # a new reader: nothing kept in any process
    assert jobs(samples, "proc.outcome", "succeeded") == 30
    assert jobs(samples, "proc.outcome", "failed") == 10

    again = GreenqRun(tmp_path, redis_url, namespace, "-c", "1",
                      task_file=os.path.join(TASKS, "proc_outcome.py"))
    try:
        again.wait_ready(1)
        q.submit_jobs([{"task_id": "proc.outcome", "params": {}} for _ in range(5)])
        wait_until(lambda: settled(q), timeout=30)
    finally:
        again.kill_all()
    assert jobs(scrape(q), "proc.outcome", "succeeded") == 35


def test_jobs_of_a_killed_process_are_counted_by_the_stale_flush(tmp_path, redis_url, namespace,
                                                                 make_queue, r):
    q = make_queue()
    run = GreenqRun(tmp_path, redis_url, namespace, "-c", "1",
                    task_file=os.path.join(TASKS, "proc_sleep.py"))
    key = namespace + ":sleep"
    try:
        run.wait_ready(1)
        doomed = q.submit_job("proc.sleep", params={"url": redis_url, "key": key, "seconds": 30},
                              retries=0)
        retried = q.submit_job("proc.sleep", params={"url": redis_url, "key": key, "n": 1,
                                                     "seconds": 30}, retries=1)
        wait_until(lambda: r.llen(key + ":started") == 2, timeout=20)
        for child in run.children():
            os.kill(child, signal.SIGSTOP)      # hung: it cannot give its jobs back...
    finally:
        run.kill_all()                          # ...and then SIGKILLed with its master
    time.sleep(1.2)                             # the task's timeout is 1 s
    assert q.force_flush_stale_jobs() == 2
    assert q.get_job(doomed).state == "failed"
    samples = scrape(q)
    assert jobs(samples, "proc.sleep", "failed") == 1
    assert jobs(samples, "proc.sleep", "retried") == 1
    # A dead process' run has no duration to observe.
    assert hist(samples, "greenq_job_duration_seconds", "proc.sleep", "count") is None
    assert q.get_job(retried).state == "pending"
    r.delete(q.keys.pending)                    # not to be run by the next worker

    # A child SIGKILLed under a live master: the master reclaims its jobs.
    run = GreenqRun(tmp_path, redis_url, namespace, "-c", "1",
                    task_file=os.path.join(TASKS, "proc_sleep.py"))
    try:
        [child] = run.wait_ready(1)
        q.submit_job("proc.sleep", params={"url": redis_url, "key": key, "n": 2, "seconds": 30},
                     retries=0)
        wait_until(lambda: r.llen(key + ":started") == 3, timeout=20)
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: jobs(scrape(q), "proc.sleep", "failed") == 2, timeout=20)
    finally:
        run.kill_all()
