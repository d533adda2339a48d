"""Load shapes that break naive queues: one hot resource beside many cold
ones, and a hundred thousand distinct resources at once.

Every job appends "S <key> <seq>" / "E <key> <seq>" to an O_APPEND file
(tests/tasks/fault_scale_log.py), so the order of runs, a double run and a
lost job all show in the file. Redis cost is read from the server itself:
INFO commandstats (commands run inside Lua scripts included), INFO memory,
INFO cpu (Redis CPU per job with 100k vs 20k jobs queued: an O(N) command
shows as a ratio, whatever the machine's load) and SLOWLOG (wall clock, so
only a large share of slow script calls counts). The server is private to
this module, so no other test's traffic is counted."""

from __future__ import annotations

import logging
import os
import sys
import time

import gevent
import pytest

from conftest import wait_until
from greenq.keys import partitions_key
from redis_server import RedisServer

log = logging.getLogger("greenq.tests.scale")

HOT_JOBS = 1000
COLD_RESOURCES = 1000
SCALE_JOBS = 100_000
SLOWLOG_THRESHOLD_US = 10_000  # 10 ms, Redis' default slowlog threshold
SLOW_SHARE = 0.25  # an O(N) script is slow on every call; scheduling noise on a few
# Commands the test itself sends to read the server; not part of greenq's cost.
OBSERVER_COMMANDS = {"info", "slowlog", "config", "scan", "memory", "ping"}


@pytest.fixture(scope="module")
def server():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def raw(server):
    client = server.client()
    yield client
    client.close()


@pytest.fixture
def log_task(tmp_path):
    """The fault_scale_log module as registered, writing to a fresh file."""
    path = str(tmp_path / "runs.log")

    def bind():
        module = sys.modules["greenq_tasks_fault_scale_log"]
        module.log_path = path
        module.gate.clear()
        return module

    bind.path = path
    yield bind
    module = sys.modules.get("greenq_tasks_fault_scale_log")
    if module is not None:
        module.gate.set()  # never leave a job blocked for the queue's teardown
        module.log_path = None


def read_runs(path: str) -> list[tuple[str, str, int]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(kind, key, int(seq)) for kind, key, seq in (line.split() for line in f)]


def count_lines(path: str, prefix: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.startswith(prefix))


def greenq_commands(raw) -> int:
    """Commands the server has run so far, those inside Lua included, minus
    the ones this test sends to observe it."""
    stats = raw.info("commandstats")
    return sum(entry["calls"] for name, entry in stats.items()
               if name.removeprefix("cmdstat_").split("|")[0] not in OBSERVER_COMMANDS)


def queue_keys(raw, namespace: str) -> set[bytes]:
    return set(raw.scan_iter(match=namespace + ":*", count=10_000))


def fixed_keys(queue) -> set[bytes]:
    k = queue.keys
    return {key.encode() for key in (k.pending, k.locks, k.counts, k.failed, k.procs, k.beats,
                                      k.clock, k.metrics, k.history,
                                      partitions_key(queue.namespace, queue.queue_id))}


def evalsha_calls(raw) -> int:
    return raw.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


def redis_cpu_us(raw) -> float:
    cpu = raw.info("cpu")
    return (cpu["used_cpu_user_main_thread"] + cpu["used_cpu_sys_main_thread"]) * 1e6


def measure_segment(raw, queue, until_pending: int) -> float:
    """Redis main-thread CPU microseconds per job fetched from now until the
    pending list is down to `until_pending` jobs."""
    pending, cpu = raw.llen(queue.keys.pending), redis_cpu_us(raw)
    wait_until(lambda: raw.llen(queue.keys.pending) <= until_pending, timeout=240, interval=0.02)
    if until_pending == 0:
        wait_until(lambda: queue.stats()["active"] == 0, timeout=60, interval=0.02)
    fetched = pending - raw.llen(queue.keys.pending)
    return (redis_cpu_us(raw) - cpu) / max(1, fetched)


def describe_slow_entry(queue, entry: dict) -> str:
    """A SLOWLOG entry as "<script>.lua 12345 us" (or the command itself)."""
    words = entry["command"].split()
    what = words[0].decode(errors="replace")
    if what.upper() == "EVALSHA" and len(words) > 1:
        names = {script.sha.encode(): name for name, script in queue.broker.scripts.items()}
        what = names.get(words[1], "unknown script") + ".lua"
    elif len(words) > 1:
        what += " " + words[1].decode(errors="replace")
    return f"{what} {entry['duration']} us"


def assert_nothing_left_but_fixed_keys(raw, queue, namespace: str) -> None:
    left = queue_keys(raw, namespace)
    # sent:<nonce> marks a submit call for a re-send of it (submit.lua); it expires.
    marks = {key for key in left if key.startswith(queue.keys.prefix.encode() + b"sent:")}
    assert all(0 < raw.pttl(key) <= queue.broker.resend_window_ms for key in marks)
    # job:<id> of a succeeded job stays for result_ttl, then expires.
    records = [key for key in left if key.startswith(queue.keys.prefix.encode() + b"job:")]
    pipe = raw.pipeline(transaction=False)
    for key in records:
        pipe.hget(key, "state").pttl(key)
    replies = pipe.execute()
    kept = {key for key, state, ttl in zip(records, replies[0::2], replies[1::2])
            if state == b"succeeded" and 0 < ttl <= queue.result_ttl * 1000}
    per_id = sorted(key for key in left
                    if key not in fixed_keys(queue) and key not in marks and key not in kept)
    assert per_id == [], f"{len(per_id)} per-job/per-resource keys left, e.g. {per_id[:5]}"
    k = queue.keys
    assert raw.llen(k.pending) == 0 and raw.llen(k.failed) == 0 and raw.hlen(k.locks) == 0
    assert int(raw.hget(k.counts, "active") or 0) == 0
    assert int(raw.hget(k.counts, "waiting") or 0) == 0


def assert_hot_runs_in_submission_order_one_at_a_time(runs, key: str, count: int) -> None:
    hot = [(kind, seq) for kind, k, seq in runs if k == key]
    expected = [(kind, seq) for seq in range(count) for kind in ("S", "E")]
    if hot != expected:
        first = next(i for i, want in enumerate(expected) if i >= len(hot) or hot[i] != want)
        pytest.fail(f"{key}: run record #{first} is {hot[first:first + 4]}, expected "
                    f"{expected[first:first + 4]} (S/E per job, in submission order)")


# -- one hot resource beside many cold ones ------------------------------------


@pytest.mark.timeout(180)
def test_a_hot_resource_runs_in_fifo_order_without_starving_a_thousand_cold_ones(
        make_queue, server, raw, log_task, namespace, record_property):
    queue = make_queue("fault_scale_log", redis_url=server.url, worker_count=50)
    log_task()
    # Hot jobs first: a queue that served resources in submission order
    # would make every cold job wait for the whole hot chain.
    jobs = [{"task_id": "fault.scale.log", "resource_id": "hot", "params": {"k": "hot", "s": n}}
            for n in range(HOT_JOBS)]
    jobs += [{"task_id": "fault.scale.log", "resource_id": f"cold-{n}", "params": {"k": f"cold-{n}", "s": 0}}
             for n in range(COLD_RESOURCES)]
    queue.submit_jobs(jobs)
    assert raw.llen(queue.keys.wait("hot")) == HOT_JOBS - 1
    assert queue.stats()["pending"] == COLD_RESOURCES + 1

    before = greenq_commands(raw)
    started = time.monotonic()
    queue.start()
    total = HOT_JOBS + COLD_RESOURCES
    # Poll the file, not Redis, so the test's reads are not counted as greenq's.
    wait_until(lambda: count_lines(log_task.path, "E ") == total, timeout=120, interval=0.05)
    elapsed = time.monotonic() - started
    commands = greenq_commands(raw) - before

    runs = read_runs(log_task.path)
    assert len(runs) == 2 * total
    assert_hot_runs_in_submission_order_one_at_a_time(runs, "hot", HOT_JOBS)
    cold_ends = [i for i, (kind, key, _) in enumerate(runs) if kind == "E" and key.startswith("cold-")]
    assert sorted(key for kind, key, _ in runs if kind == "S" and key.startswith("cold-")) == \
        sorted(f"cold-{n}" for n in range(COLD_RESOURCES))
    hot_500th_start = runs.index(("S", "hot", 499))
    assert max(cold_ends) < hot_500th_start, "cold jobs were starved behind the hot resource"

    per_job = commands / total
    record_property("redis_commands_per_job", round(per_job, 2))
    record_property("redis_commands_per_second", round(commands / elapsed))
    log.info("hot+cold drain: %d jobs, %d Redis commands (%.2f per job, %.0f per second)",
             total, commands, per_job, commands / elapsed)
    assert per_job < 60, f"{per_job:.1f} Redis commands per job"
    wait_until(lambda: queue.stats()["active"] == 0)
    queue.shutdown()
    assert_nothing_left_but_fixed_keys(raw, queue, namespace)


@pytest.mark.timeout(180)
def test_jobs_waiting_behind_a_busy_resource_cost_no_redis_commands_while_they_wait(
        make_queue, server, raw, log_task, namespace, record_property):
    queue = make_queue("fault_scale_log", redis_url=server.url, worker_count=50)
    module = log_task()
    queue.submit_jobs([{"task_id": "fault.scale.log", "resource_id": "hot",
                        "params": {"k": "hot", "s": n, "gate": n == 0}} for n in range(HOT_JOBS)])
    queue.start()
    wait_until(lambda: count_lines(log_task.path, "S hot 0") == 1, timeout=30)
    assert queue.stats() | {"locked_resources": 1, "workers": 1, "scheduled": 0} == \
        {"pending": 0, "active": 1, "waiting": HOT_JOBS - 1, "failed": 0, "locked_resources": 1,
         "workers": 1, "scheduled": 0}

    # Only the hot resource's jobs remain: one running (blocked on the gate),
    # 999 waiting. What Redis sees now is the idle cost of the worker: its
    # heartbeat/stale tick and the fetcher's blocking wait, whatever waits.
    before, window_start = greenq_commands(raw), time.monotonic()
    gevent.sleep(3.0)
    commands, window = greenq_commands(raw) - before, time.monotonic() - window_start
    rate = commands / window
    record_property("idle_commands_per_second_with_999_waiting", round(rate, 1))
    log.info("%d Redis commands in %.1f s with one job running and %d waiting (%.1f per second)",
             commands, window, HOT_JOBS - 1, rate)
    # Polling the 999 waiting jobs even once a second would be >= 999/s.
    assert rate < 100, f"{commands} commands in {window:.1f}s while jobs only waited"
    assert raw.llen(queue.keys.wait("hot")) == HOT_JOBS - 1
    assert count_lines(log_task.path, "S ") == 1

    module.gate.set()
    wait_until(lambda: count_lines(log_task.path, "E ") == HOT_JOBS, timeout=120, interval=0.05)
    assert_hot_runs_in_submission_order_one_at_a_time(read_runs(log_task.path), "hot", HOT_JOBS)
    wait_until(lambda: queue.stats()["active"] == 0)
    queue.shutdown()
    assert_nothing_left_but_fixed_keys(raw, queue, namespace)


# -- a hundred thousand distinct resources ---------------------------------------


@pytest.mark.timeout(300)
def test_a_hundred_thousand_resources_drain_leaving_no_per_resource_key_and_no_slow_script(
        make_queue, server, raw, log_task, namespace, record_property):
    queue = make_queue("fault_scale_log", redis_url=server.url, worker_count=300)
    log_task()
    jobs = [{"task_id": "fault.scale.log", "resource_id": f"r{n}", "params": {"k": f"r{n}", "s": n}}
            for n in range(SCALE_JOBS)]
    baseline = raw.info("memory")["used_memory"]
    submit_started = time.monotonic()
    ids = queue.submit_jobs(jobs)
    submit_seconds = time.monotonic() - submit_started
    queued = raw.info("memory")["used_memory"]
    assert len(set(ids)) == SCALE_JOBS
    assert queue.stats() | {"locked_resources": 0, "workers": 0, "scheduled": 0} == \
        {"pending": SCALE_JOBS, "active": 0, "waiting": 0, "failed": 0, "locked_resources": 0,
         "workers": 0, "scheduled": 0}
    assert raw.hlen(queue.keys.locks) == SCALE_JOBS

    per_job = (queued - baseline) / SCALE_JOBS
    record_property("redis_bytes_per_queued_job", round(per_job))
    record_property("bulk_submit_jobs_per_second", round(SCALE_JOBS / submit_seconds))
    log.info("%d queued jobs on %d resources: %.0f bytes of Redis memory per job "
             "(used_memory %d -> %d); bulk submit %.1f s",
             SCALE_JOBS, SCALE_JOBS, per_job, baseline, queued, submit_seconds)
    assert per_job < 2048, f"{per_job:.0f} bytes of Redis memory per queued job"

    # The submit is done: from here on Redis only sees the fetch, finish and
    # tick paths (and this test's O(1) progress reads).
    old_config = raw.config_get("slowlog-*")
    raw.config_set("slowlog-log-slower-than", SLOWLOG_THRESHOLD_US)
    raw.config_set("slowlog-max-len", 100_000)
    try:
        raw.slowlog_reset()
        scripts_before = evalsha_calls(raw)
        drain_started = time.monotonic()
        queue.start()
        # Redis CPU per job while the queue holds 100k..80k jobs, and again at
        # 20k..0: a command costing O(queue length) on the per-job path makes
        # the first far dearer than the second. CPU time, unlike SLOWLOG's
        # wall clock, does not grow when a loaded machine deschedules Redis.
        early = measure_segment(raw, queue, until_pending=SCALE_JOBS * 4 // 5)
        wait_until(lambda: raw.llen(queue.keys.pending) <= SCALE_JOBS // 5, timeout=240, interval=0.02)
        late = measure_segment(raw, queue, until_pending=0)
        wait_until(lambda: queue.stats()["active"] == 0
                   and count_lines(log_task.path, "E ") == SCALE_JOBS, timeout=240, interval=0.25)
        drain_seconds = time.monotonic() - drain_started
        slow = raw.slowlog_get(100_000)
        script_calls = evalsha_calls(raw) - scripts_before
    finally:
        for name, value in old_config.items():
            raw.config_set(name, value)
    record_property("drain_jobs_per_second", round(SCALE_JOBS / drain_seconds))
    record_property("redis_cpu_us_per_job_queue_100k_to_80k", round(early, 1))
    record_property("redis_cpu_us_per_job_queue_20k_to_0", round(late, 1))
    record_property("slowlog_entries_over_10ms", len(slow))
    record_property("slowlog_sample", "; ".join(describe_slow_entry(queue, e) for e in slow[:20]))
    log.info("drained %d jobs in %.1f s; Redis CPU per job %.1f us at 100k..80k queued, %.1f us "
             "at 20k..0; %d script calls, %d SLOWLOG entries over 10 ms: %s",
             SCALE_JOBS, drain_seconds, early, late, script_calls, len(slow),
             "; ".join(describe_slow_entry(queue, e) for e in slow[:20]))
    assert early < 3 * late, (f"Redis CPU per job {early:.1f} us with 100k jobs queued vs "
                              f"{late:.1f} us with 20k: a per-job command grows with the queue")

    queue.shutdown()
    runs = read_runs(log_task.path)
    starts = sorted(seq for kind, _, seq in runs if kind == "S")
    assert starts == list(range(SCALE_JOBS)), "a job ran twice or not at all"
    assert len(runs) == 2 * SCALE_JOBS
    assert_nothing_left_but_fixed_keys(raw, queue, namespace)
    after = raw.info("memory")["used_memory"]
    record_property("redis_bytes_left_after_drain", after - baseline)
    log.info("used_memory after the drain: %d (baseline %d)", after, baseline)

    # Last, so the checks above still report when this one fails. An O(N)
    # command at N = 100k is slow on every call of its path; a loaded
    # machine that deschedules Redis makes a scattering of calls slow. So
    # SLOWLOG must hold no more than a small share of the script calls.
    slow_scripts = [e for e in slow if e["command"].upper().startswith(b"EVALSHA")]
    assert len(slow_scripts) < SLOW_SHARE * script_calls, (
        f"{len(slow_scripts)} of {script_calls} script calls took over 10 ms: " + "; ".join(
            describe_slow_entry(queue, entry) for entry in slow_scripts[:20]))
