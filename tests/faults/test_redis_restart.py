"""Redis restarted under running workers: without persistence (everything
gone) and with the AOF (appendfsync always: every acknowledged write kept).
Each test has its own redis-server on a port it keeps across restarts;
every test checks Redis and the side-effect log of
tests/tasks/fault_log_sleep.py."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

import greenq
from conftest import wait_until
from greenq import GreenQueue
from redis_server import RedisServer
from queue_state import assert_queue_empty, unfinished_records
from sidelog import TASK_FILE, TASK_ID, EventWorker, GreenqRun, SideLog

pytestmark = pytest.mark.timeout(120)

NAMESPACE = "restart"
PREFIX = NAMESPACE + ":{default}:"


@pytest.fixture
def plain_server():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def aof_server():
    server = RedisServer(persistence=True).start()
    yield server
    server.close()


@pytest.fixture
def side(tmp_path):
    return SideLog(tmp_path / "side.log")


@pytest.fixture
def queues():
    """queues(server, **kwargs) -> a GreenQueue of the witness task on `server`."""
    made = []

    def make(server, **kwargs):
        kwargs.setdefault("flush_stale_timeout", 0.2)
        queue = GreenQueue(redis_url=server.url, namespace=NAMESPACE, **kwargs)
        queue.register_task(TASK_FILE)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.shutdown(timeout=5)


class Events:
    def __init__(self, *queues) -> None:
        self.seen = []
        for queue in queues:
            for name in ("job_success", "job_fail", "job_retry", "error"):
                queue.on(name, lambda payload, name=name: self.seen.append((name, payload)))

    def of(self, name: str) -> list:
        return [payload for kind, payload in self.seen if kind == name]

    def ids(self, name: str) -> list[str]:
        return [job.id for job in self.of(name)]

    def lease_lost(self) -> list[str]:
        return [str(e) for e in self.of("error") if isinstance(e, greenq.LeaseLostError)]


def job(side, n, resource=None, retries=0, **params):
    return {"task_id": TASK_ID, "resource_id": resource, "retries": retries,
            "params": side.params(n, **params)}


# -- without persistence --------------------------------------------------------------


def test_an_emptied_redis_crashes_no_worker_runs_no_running_job_twice_and_new_jobs_run(
        plain_server, queues, side, tmp_path):
    embedded = queues(plain_server, worker_count=4)
    events = Events(embedded)
    embedded.start()
    other = GreenqRun(tmp_path, plain_server.url, NAMESPACE, "-c", "1", "-w", "4",
                      "--flush-stale-timeout", "0.2")
    try:
        other.wait_ready(1)
        old = embedded.submit_jobs([job(side, n, f"r{n}", retries=1, seconds=3) for n in range(8)])
        wait_until(lambda: len(side.count("start")) == 8, timeout=30)
        ran_here = {e.n for e in side.entries() if e.pid == os.getpid()}
        assert 0 < len(ran_here) < 8, "both worker processes should hold running jobs"

        plain_server.restart()   # every record, lock and lease is gone

        wait_until(lambda: len(side.count("end")) == 8, timeout=30)
        embedded.submit_jobs([job(side, n, f"r{n - 10}", seconds=0.1) for n in range(10, 14)])
        wait_until(lambda: {10, 11, 12, 13} <= set(side.count("end")), timeout=30)
        client = plain_server.client()
        wait_until(lambda: not unfinished_records(client, PREFIX)
                   and int(client.hget(PREFIX + "counts", "active") or 0) == 0, timeout=10)

        # Each job ran exactly once, the running ones to their end.
        side.assert_each_ended_once([*range(8), *range(10, 14)])
        assert set(side.count("start").values()) == {1}
        assert side.interrupted() == []
        # Nothing crashed: the other worker still runs, with no traceback.
        assert other.process.poll() is None
        assert "Traceback" not in other.output()
        # The embedded worker's late finishes are reported, not raised.
        errors = events.of("error")
        assert errors and all(isinstance(e, (greenq.BrokerError, greenq.LeaseLostError))
                              for e in errors), errors
        for n in ran_here:
            assert any(old[n] in text and "record is gone" in text for text in events.lease_lost()), \
                (n, errors)
        for n in set(range(8)) - ran_here:   # the other worker's, in its log
            assert f"job {old[n]} (fault.log) succeeded after its record is gone" in other.output()
        assert not set(old) & set(events.ids("job_success"))
        assert events.of("job_retry") == [] and events.of("job_fail") == []
        assert_queue_empty(client, PREFIX)
        other.send(signal.SIGTERM)
        assert other.wait(30) == 0
    finally:
        other.kill_all()


# -- with the AOF -----------------------------------------------------------------------


def test_with_the_aof_every_job_survives_two_redis_kills_succeeded_or_failed_and_fenced_finishes_are_errors(
        aof_server, queues, side):
    """Redis is SIGKILLed twice under two worker processes, once for longer
    than the task's 1 s timeout: a flush may then reclaim jobs whose workers
    could not heartbeat (at-least-once allows the second run); each such
    late finish must be an `error` event, and every job must end."""
    workers = [queues(aof_server, worker_count=3) for _ in range(2)]
    events = Events(*workers)
    for worker in workers:
        worker.start()
    resources = {n: f"r{n % 6}" for n in range(30)}
    ids = workers[0].submit_jobs([job(side, n, resources[n], retries=2, seconds=0.3)
                                  for n in range(30)])

    for ended, down in ((6, 2.0), (16, 0.5)):
        wait_until(lambda: len(side.count("end")) >= ended, timeout=30)
        aof_server.kill()
        time.sleep(down)
        aof_server.start()

    client = aof_server.client()

    def settled():
        records = unfinished_records(client, PREFIX)
        return len(records) == client.llen(PREFIX + "failed") and \
            int(client.hget(PREFIX + "counts", "active") or 0) == 0
    wait_until(settled, timeout=60)

    failed = {i.decode() for i in client.lrange(PREFIX + "failed", 0, -1)}
    succeeded = set(ids) - failed
    successes = Counter(events.ids("job_success"))
    assert {i: successes[i] for i in succeeded} == {i: 1 for i in succeeded}
    assert not failed & set(successes)
    ends = side.count("end")
    number = {job_id: n for n, job_id in enumerate(ids)}
    assert all(ends[number[i]] >= 1 for i in succeeded), side.dump()
    # A job ran twice only when a stale flush reclaimed it, and then its
    # first run's finish (if it came) was fenced and reported.
    reclaimed = Counter(events.ids("job_retry") + events.ids("job_fail"))
    starts = side.count("start")
    for n, job_id in enumerate(ids):
        assert starts[n] <= 1 + reclaimed[job_id], (n, side.dump())
    for text in events.lease_lost():
        assert any(job_id in text for job_id in reclaimed), text
    assert all(isinstance(e, (greenq.BrokerError, greenq.LeaseLostError))
               for e in events.of("error")), events.of("error")
    for job_id in failed:
        assert client.hget(PREFIX + f"job:{job_id}", "state") == b"failed"
    assert client.llen(PREFIX + "pending") == 0 and client.hlen(PREFIX + "locks") == 0
    assert int(client.hget(PREFIX + "counts", "waiting") or 0) == 0


@pytest.mark.parametrize("mode", ["finish-after-reconnect", "finish-at-resume",
                                  "finish-while-redis-down"])
def test_a_late_finish_after_an_aof_restart_and_a_stale_flush_is_an_error_event_and_the_worker_goes_on(
        aof_server, queues, side, tmp_path, mode):
    """A worker process is frozen (SIGSTOP) and an operator's flush reclaims
    its jobs, which a rescuer then runs to success. Thawed, the worker
    finishes them too: each late finish is fenced and must be an `error`
    event (LeaseLostError), never an exception or a second success.
    finish-after-reconnect / finish-at-resume: Redis was killed and came back
    from its AOF while the worker was frozen; the jobs finish well after the
    worker reconnected, or the moment it thaws.
    finish-while-redis-down: Redis is killed just before the thaw, so the
    late finishes cannot reach it and greenq sends them again once it is back."""
    frozen = EventWorker(tmp_path, aof_server.url, NAMESPACE, workers=3)
    admin = queues(aof_server)
    admin_events = Events(admin)
    try:
        wait_until(lambda: frozen.events("started"), timeout=30)
        first = 6.0 if mode == "finish-after-reconnect" else 2.0
        ids = admin.submit_jobs([job(side, n, f"r{n}", retries=1, first=first, seconds=0.05)
                                 for n in range(3)])
        wait_until(lambda: len(side.count("start")) == 3, timeout=30)
        frozen.process.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        if mode != "finish-while-redis-down":
            aof_server.kill()
            aof_server.start()
        time.sleep(max(0.0, stopped_at + 1.5 - time.monotonic()))  # > the task's 1 s timeout

        assert admin.force_flush_stale_jobs() == 3
        assert sorted(admin_events.ids("job_retry")) == sorted(ids)
        rescuer = queues(aof_server, worker_count=3)
        rescue_events = Events(rescuer)
        rescuer.start()
        wait_until(lambda: sorted(rescue_events.ids("job_success")) == sorted(ids), timeout=20)
        rescuer.shutdown()
        if mode == "finish-while-redis-down":
            aof_server.kill()
            frozen.process.send_signal(signal.SIGCONT)
            wait_until(lambda: len(side.count("end")) == 3 and all(
                count == 2 for count in side.count("end").values()), timeout=30)
            time.sleep(0.5)  # the worker tries to commit, and fails
            aof_server.start()
        else:
            frozen.process.send_signal(signal.SIGCONT)

        wait_until(lambda: len(side.count("end")) == 3 and all(
            count == 2 for count in side.count("end").values()), timeout=30)
        # The thawed worker still runs jobs (no other worker is left).
        more = admin.submit_jobs([job(side, n, f"r{n - 10}") for n in (10, 11)])
        wait_until(lambda: set(more) <= {e["id"] for e in frozen.events("job_success")}, timeout=30)

        assert frozen.process.poll() is None
        assert not set(ids) & {e["id"] for e in frozen.events("job_success")}, frozen.events()
        lost = [e for e in frozen.events("error") if e["type"] == "LeaseLostError"]
        assert sorted(job_id for job_id in ids if any(job_id in e["text"] for e in lost)) == sorted(ids), \
            frozen.events()
        assert {e["type"] for e in frozen.events("error")} <= {"LeaseLostError", "BrokerError"}
        for n in range(3):  # the rescuer's run and the thawed first run
            assert sorted(e.run for e in side.lines_of(n, "end")) == [1, 2]
        assert Counter(e.n for e in side.entries() if e.what == "end" and e.n >= 10) == {10: 1, 11: 1}
        client = aof_server.client()
        wait_until(lambda: not unfinished_records(client, PREFIX), timeout=10)
        assert_queue_empty(client, PREFIX)
    finally:
        frozen.kill()
