"""Failures with real processes, real signals and a real redis-server:
a worker process killed mid-job, a worker process that stalls past its
timeout, Redis killed and restarted mid-run, garbage in Redis, and Redis
unreachable at submit time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import gevent
import msgpack
import pytest
import redis

import greenq
from conftest import TASKS, wait_until
from redis_server import RedisServer, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(TASKS)))  # the checkout
HANG = os.path.join(TASKS, "fault_hang.py")

# A worker process: a monkey-patched program embedding a GreenQueue that
# writes every event it sees, one JSON object a line, to a file.
DRIVER = r'''
import gevent.monkey
gevent.monkey.patch_all()
import json, signal, sys
import gevent, gevent.event
from greenq import GreenQueue

url, ns, task, workers, out = sys.argv[1:6]
q = GreenQueue(redis_url=url, namespace=ns, worker_count=int(workers))
q.register_task(task)
log = open(out, "a", buffering=1)

def handler(name):
    def handle(payload):
        if name == "error":
            rec = {"event": name, "type": type(payload).__name__, "text": str(payload)}
        else:
            rec = {"event": name, "id": payload.id, "attempts": payload.attempts,
                   "error": payload.error}
        log.write(json.dumps(rec) + "\n")
    return handle

for name in ("job_success", "job_fail", "job_retry", "error"):
    q.on(name, handler(name))
q.start()
log.write(json.dumps({"event": "started"}) + "\n")
stop = gevent.event.Event()
gevent.signal_handler(signal.SIGTERM, stop.set)
stop.wait()
q.shutdown(timeout=2)
'''


class WorkerProcess:
    """One DRIVER subprocess running `task` against the test Redis."""

    def __init__(self, tmp_path, url: str, namespace: str, task: str = HANG, workers: int = 2):
        self.events_path = tmp_path / f"events-{time.monotonic_ns()}.jsonl"
        self.events_path.touch()
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, "-c", DRIVER, url, namespace, task, str(workers), str(self.events_path)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def events(self) -> list[dict]:
        lines = self.events_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def worker_process(tmp_path, redis_url, namespace):
    started = []

    def start(**kwargs):
        proc = WorkerProcess(tmp_path, redis_url, namespace, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


class Recorder:
    """Collects a queue's events."""

    def __init__(self, queue) -> None:
        self.seen: dict[str, list] = {name: [] for name in
                                      ("job_success", "job_fail", "job_retry", "error")}
        for name, items in self.seen.items():
            queue.on(name, items.append)

    def __getitem__(self, name):
        return self.seen[name]

    def ids(self, name):
        return [job.id for job in self.seen[name]]


def hang_params(redis_url, key, mode="none", seconds=30):
    return {"url": redis_url, "key": key, "mode": mode, "seconds": seconds}


def started_runs(r, key) -> list[str]:
    return [x.decode() for x in r.lrange(key + ":started", 0, -1)]


# -- a worker process killed with SIGKILL mid-job ------------------------------


def test_a_job_of_a_killed_process_is_flushed_retried_and_runs_again_as_a_second_attempt(
        make_queue, worker_process, redis_url, namespace, r):
    admin = make_queue("fault_hang")             # never started: submits and flushes
    admin_events = Recorder(admin)
    key, next_key = namespace + ":a", namespace + ":b"
    job = admin.submit_job("fault.hang", resource_id="res", retries=1,
                           params=hang_params(redis_url, key, "sleep", 30))
    next_job = admin.submit_job("fault.hang", resource_id="res",
                                params=hang_params(redis_url, next_key))
    victim = worker_process(workers=2)
    wait_until(lambda: started_runs(r, key), timeout=20)
    victim.kill()
    assert victim.process.returncode == -signal.SIGKILL
    time.sleep(0.9)                               # > the task's 0.5 s timeout

    assert admin.force_flush_stale_jobs() == 1
    (retried,) = admin_events["job_retry"]
    assert retried.id == job and retried.retries == 0
    assert "stale" in retried.error and "heartbeat" in retried.error
    assert admin_events["job_fail"] == []
    record = r.hgetall(admin.keys.job(job))
    assert record[b"state"] == b"pending" and record[b"attempts"] == b"1"
    assert r.hget(admin.keys.locks, "res") == job.encode()   # the retry keeps its resource
    assert admin.force_flush_stale_jobs() == 0

    rescuer = make_queue("fault_hang", worker_count=2)
    rescue_events = Recorder(rescuer)
    rescuer.start()
    wait_until(lambda: set(rescue_events.ids("job_success")) == {job, next_job}, timeout=15)
    by_id = {j.id: j for j in rescue_events["job_success"]}
    assert by_id[job].attempts == 2              # the crash counted as an attempt
    assert rescue_events.ids("job_success").index(job) < rescue_events.ids("job_success").index(next_job)
    assert len(started_runs(r, key)) == 2 and len(started_runs(r, next_key)) == 1
    assert r.hlen(admin.keys.locks) == 0
    assert admin.stats()["active"] == 0 and admin.stats()["failed"] == 0


def test_a_job_of_a_killed_process_with_no_retries_left_goes_to_the_failed_queue_and_frees_its_resource(
        make_queue, worker_process, redis_url, namespace, r):
    admin = make_queue("fault_hang")
    admin_events = Recorder(admin)
    key, next_key = namespace + ":a", namespace + ":b"
    job = admin.submit_job("fault.hang", resource_id="res", retries=0,
                           params=hang_params(redis_url, key, "sleep", 30))
    next_job = admin.submit_job("fault.hang", resource_id="res",
                                params=hang_params(redis_url, next_key))
    victim = worker_process(workers=1)
    wait_until(lambda: started_runs(r, key), timeout=20)
    victim.kill()
    time.sleep(0.9)

    assert admin.force_flush_stale_jobs() == 1
    (failed,) = admin_events["job_fail"]
    assert failed.id == job and admin_events["job_retry"] == []
    assert "stale" in failed.error and "heartbeat" in failed.error
    (in_queue,) = admin.failed_jobs()
    assert in_queue.id == job and in_queue.attempts == 1 and "stale" in in_queue.error
    assert in_queue.params == hang_params(redis_url, key, "sleep", 30)
    assert r.hget(admin.keys.locks, "res") == next_job.encode()

    rescuer = make_queue("fault_hang", worker_count=2)
    rescue_events = Recorder(rescuer)
    rescuer.start()
    wait_until(lambda: rescue_events.ids("job_success") == [next_job], timeout=15)
    assert len(started_runs(r, key)) == 1         # the failed job does not run again
    assert r.hlen(admin.keys.locks) == 0
    assert admin.stats()["failed"] == 1


# -- fencing: a stalled process finishes after its lease was taken -------------


def test_the_late_finish_of_a_stalled_process_changes_nothing_and_is_reported_as_an_error(
        make_queue, worker_process, redis_url, namespace, r):
    rescuer = make_queue("fault_hang", worker_count=2)
    rescue_events = Recorder(rescuer)
    key, next_key = namespace + ":a", namespace + ":b"
    job = rescuer.submit_job("fault.hang", resource_id="res", retries=1,
                             params=hang_params(redis_url, key, "sleep", 3.0))
    next_job = rescuer.submit_job("fault.hang", resource_id="res",
                                  params=hang_params(redis_url, next_key))
    stalled = worker_process(workers=1)
    wait_until(lambda: started_runs(r, key), timeout=20)
    # Freeze the whole process, threads included: no heartbeat goes out (a
    # merely blocked hub would still heartbeat from greenq's lifeline thread).
    stalled.process.send_signal(signal.SIGSTOP)
    gevent.spawn_later(2.0, stalled.process.send_signal, signal.SIGCONT)
    rescuer.start()        # its stale tick takes the lease once the 0.5 s timeout lapses

    wait_until(lambda: set(rescue_events.ids("job_success")) == {job, next_job}, timeout=15)
    assert rescue_events.ids("job_retry") == [job]
    assert r.hlen(rescuer.keys.locks) == 0
    # the stalled first run ends later, in its own process
    wait_until(lambda: any(e["event"] == "error" for e in stalled.events()), timeout=15)
    errors = [e for e in stalled.events() if e["event"] == "error"]
    assert [e["type"] for e in errors] == ["LeaseLostError"]
    assert job in errors[0]["text"]
    assert len(r.lrange(key + ":done", 0, -1)) == 2          # both runs of the job finished
    assert not any(e["event"] == "job_success" and e["id"] == job for e in stalled.events())
    assert rescue_events.ids("job_success").count(job) == 1
    # nothing changed in Redis: no double release, and the record kept for
    # result_ttl is the rescuing run's success, untouched
    assert r.hget(rescuer.keys.job(job), "state") == b"succeeded"
    assert r.hlen(rescuer.keys.locks) == 0
    # (workers: whichever of the test's processes are live, not this test's business)
    assert rescuer.stats() | {"workers": 0} == {"pending": 0, "active": 0, "waiting": 0,
                                                "failed": 0, "locked_resources": 0, "workers": 0,
                                                "scheduled": 0}
    assert len(started_runs(r, next_key)) == 1


# -- Redis killed and restarted mid-run ----------------------------------------


def test_workers_ride_out_redis_restarts_with_one_error_event_per_outage_and_lose_no_job(make_queue):
    """Three rounds: jobs start, Redis is killed (SIGKILL, AOF on), the
    running jobs finish while it is gone, Redis comes back. Their finishes
    are delivered after the restart, the queued jobs run, and no job runs
    twice: nobody's heartbeat lapsed."""
    server = RedisServer(persistence=True).start()
    queue = None
    try:
        queue = make_queue("fault_slow", redis_url=server.url, worker_count=3)
        events = Recorder(queue)
        module = queue.registry.get("fault.slow").perform.__globals__
        runs, finished = module["runs"], module["finished"]
        queue.start()
        all_ids = []
        for outage in range(3):
            numbers = [outage * 10 + i for i in range(4)]
            ids = queue.submit_jobs([{"task_id": "fault.slow", "resource_id": f"r{n % 2}",
                                      "params": {"n": n, "seconds": 0.3}} for n in numbers])
            all_ids += ids
            wait_until(lambda: len(set(runs) & set(numbers)) >= 2, timeout=10)
            running = set(runs) & set(numbers)
            succeeded_before = len(events["job_success"])
            server.kill()
            time.sleep(1.0)       # the running jobs finish while Redis is gone
            assert running <= set(finished)
            assert len(events["job_success"]) == succeeded_before   # not delivered yet
            assert len(events["error"]) == outage + 1
            server.start()
            wait_until(lambda: set(ids) <= set(events.ids("job_success")), timeout=20)

        time.sleep(0.3)
        assert sorted(events.ids("job_success")) == sorted(all_ids)    # each exactly once
        assert len(events["error"]) == 3                                 # one per outage
        assert all(isinstance(e, greenq.BrokerError) for e in events["error"])
        assert Counter(runs) == Counter(finished) == Counter(
            outage * 10 + i for outage in range(3) for i in range(4))  # none ran twice
        stats = queue.stats()
        assert (stats["pending"], stats["active"], stats["waiting"], stats["failed"]) == (0, 0, 0, 0)
        assert stats["locked_resources"] == 0
    finally:
        if queue is not None and server.process.poll() is None:
            queue.shutdown(timeout=5)
        server.close()


# -- garbage in Redis ------------------------------------------------------------


def _garbage_then_a_good_job(make_queue, r, plant):
    """Plant garbage at the head of pending, then submit a good job behind it;
    run a worker (that fails unknown tasks at once) until the good job succeeds."""
    queue = make_queue("fault_slow", worker_count=1, unknown_task_grace=0)
    events = Recorder(queue)
    plant(queue.keys)
    good = queue.submit_job("fault.slow", params={"n": 1})
    queue.start()
    wait_until(lambda: events.ids("job_success") == [good], timeout=10)
    return queue, events


def _raw_record(keys, r, job_id, **fields):
    record = {"task": "fault.slow", "enc": "m", "retries": 3, "attempts": 0, "state": "pending"}
    record.update(fields)
    record = {k: v for k, v in record.items() if v is not None}
    r.hset(keys.job(job_id), mapping=record)
    r.lpush(keys.pending, job_id)


def test_a_record_with_params_that_are_not_msgpack_fails_for_good_and_the_worker_goes_on(make_queue, r):
    queue, events = _garbage_then_a_good_job(
        make_queue, r, lambda keys: _raw_record(keys, r, "bad", params=b"\xc1\xff"))
    wait_until(lambda: queue.stats()["failed"] == 1, timeout=10)
    (failed,) = queue.failed_jobs()
    assert failed.id == "bad" and "JobDecodeError" in failed.error and "decode" in failed.error
    assert failed.retries == 3             # an undecodable record is not retried
    assert [type(e) for e in events["error"]] == [greenq.JobDecodeError]
    assert "bad" in str(events["error"][0])
    assert events["job_fail"][0].id == "bad"
    assert queue.stats()["active"] == 0 and queue.stats()["pending"] == 0


def test_a_record_without_a_params_field_fails_for_good_and_the_worker_goes_on(make_queue, r):
    queue, events = _garbage_then_a_good_job(
        make_queue, r, lambda keys: _raw_record(keys, r, "noparams", params=None))
    wait_until(lambda: queue.stats()["failed"] == 1, timeout=10)
    (failed,) = queue.failed_jobs()
    assert failed.id == "noparams" and "no params" in failed.error
    assert [type(e) for e in events["error"]] == [greenq.JobDecodeError]


def test_an_id_in_pending_without_a_record_is_dropped_with_an_error_and_the_worker_goes_on(make_queue, r):
    queue, events = _garbage_then_a_good_job(make_queue, r, lambda keys: r.lpush(keys.pending, "ghost"))
    wait_until(lambda: events["error"], timeout=10)
    (error,) = events["error"]
    assert isinstance(error, greenq.BrokerError) and "ghost" in str(error)
    assert queue.stats()["failed"] == 0 and queue.stats()["pending"] == 0
    assert not r.exists(queue.keys.job("ghost"))


def test_a_record_that_is_a_redis_string_lands_in_the_failed_queue_with_its_raw_value(make_queue, r):
    def plant(keys):
        r.set(keys.job("str"), b"garbage value")
        r.lpush(keys.pending, "str")

    queue, events = _garbage_then_a_good_job(make_queue, r, plant)
    (failed,) = queue.failed_jobs()
    assert failed.id == "str" and "string" in failed.error
    assert failed.params == b"garbage value"
    assert [type(e) for e in events["error"]] == [greenq.BrokerError]
    assert "str" in str(events["error"][0])
    assert queue.delete_failed_jobs() == 1 and not r.exists(queue.keys.job("str"))


def test_a_job_naming_an_unregistered_task_fails_for_good_and_the_worker_goes_on(make_queue, r):
    queue, events = _garbage_then_a_good_job(
        make_queue, r,
        lambda keys: _raw_record(keys, r, "unknown", task="no.such.task", params=msgpack.packb(None)))
    wait_until(lambda: queue.stats()["failed"] == 1, timeout=10)
    (failed,) = queue.failed_jobs()
    assert failed.id == "unknown" and "UnknownTaskError" in failed.error
    assert [type(e) for e in events["error"]] == [greenq.UnknownTaskError]


# -- Redis unreachable at submit time ------------------------------------------


def test_submit_to_a_redis_nobody_listens_on_raises_a_connection_error_promptly():
    queue = greenq.GreenQueue(redis_url=f"redis://127.0.0.1:{free_port()}/0", namespace="nobody")
    started = time.monotonic()
    with pytest.raises((redis.ConnectionError, greenq.GreenQError)):
        queue.submit_job("t", resource_id="r", params={"a": 1})
    with pytest.raises((redis.ConnectionError, greenq.GreenQError)):
        queue.submit_jobs([{"task_id": "t"}, {"task_id": "t", "resource_id": "r"}])
    assert time.monotonic() - started < 15
    queue.shutdown()


def test_a_submit_while_redis_is_down_raises_and_writes_nothing(namespace):
    server = RedisServer(persistence=True).start()
    try:
        queue = greenq.GreenQueue(redis_url=server.url, namespace=namespace)
        first = queue.submit_job("t", resource_id="r", params={"a": 1})
        server.kill()
        started = time.monotonic()
        with pytest.raises((redis.ConnectionError, greenq.GreenQError)):
            queue.submit_job("t", resource_id="r", params={"a": 2})
        with pytest.raises((redis.ConnectionError, greenq.GreenQError)):
            queue.submit_jobs([{"task_id": "t", "resource_id": "s"}, {"task_id": "t"}])
        assert time.monotonic() - started < 15
        server.start()
        raw = server.client()
        keys = queue.keys
        left = [key for key in raw.keys(namespace + ":*") if b":sent:" not in key]  # submit marks
        assert sorted(left) == sorted([keys.job(first).encode(), keys.pending.encode(),
                                       keys.locks.encode(),
                                       f"{namespace}:{{default}}:partitions".encode()])
        assert raw.lrange(keys.pending, 0, -1) == [first.encode()]
        assert raw.hgetall(keys.locks) == {b"r": first.encode()}
        assert raw.llen(keys.wait("r")) == 0
        second = queue.submit_job("t", resource_id="r")                 # works again
        assert raw.lrange(keys.wait("r"), 0, -1) == [second.encode()]
        raw.close()
        queue.shutdown()
    finally:
        server.close()
