"""Redis stalled for longer than the jobs' timeout (CLIENT PAUSE, DEBUG SLEEP,
SIGSTOP of redis-server): when it answers again, jobs whose processes are
alive and heartbeating are not flushed as stale, and each runs exactly once.

Two queues in this process stand for two worker processes: each has its own
process id, heartbeat and stale flush, so one's flush could reclaim the
other's jobs if a stall were taken for death."""

from __future__ import annotations

import os
import signal
import time

import gevent
import pytest

from conftest import TASKS, wait_until
from greenq import GreenQueue
from redis_server import RedisServer

STALL = 3.5        # seconds; well over the task's 1 s timeout and greenq's stall threshold
JOB_SECONDS = 6.0  # jobs are still running when Redis answers again
JOBS = 8


@pytest.fixture
def server():
    # DEBUG SLEEP needs the debug command enabled (Redis 7 refuses it by default).
    server = RedisServer(extra_args=("--enable-debug-command", "yes")).start()
    yield server
    server.process.send_signal(signal.SIGCONT)  # in case a test failed mid-stop
    server.close()


def stall_with_client_pause(server):
    server.client().execute_command("CLIENT", "PAUSE", int(STALL * 1000), "ALL")


def stall_with_debug_sleep(server):
    # DEBUG SLEEP holds its caller too: send it from a greenlet of its own, on
    # a client that does not time out first.
    client = server.client(socket_timeout=STALL + 10)
    gevent.spawn(client.execute_command, "DEBUG", "SLEEP", STALL)


def stall_with_sigstop(server):
    server.process.send_signal(signal.SIGSTOP)
    gevent.spawn_later(STALL, server.process.send_signal, signal.SIGCONT)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stall", [stall_with_client_pause, stall_with_debug_sleep,
                                   stall_with_sigstop], ids=["client-pause", "debug-sleep", "sigstop"])
def test_jobs_of_live_processes_survive_a_redis_stall_longer_than_their_timeout(server, tmp_path, stall):
    log_path = str(tmp_path / "runs.log")
    events = {"job_success": [], "job_retry": [], "job_fail": [], "error": []}
    queues = []
    for _ in range(2):
        queue = GreenQueue(redis_url=server.url, namespace="stall", worker_count=JOBS // 2,
                           flush_stale_timeout=0.2)
        queue.register_task(os.path.join(TASKS, "fault_stall.py"))
        for name, seen in events.items():
            queue.on(name, seen.append)
        queues.append(queue)
    try:
        for queue in queues:
            queue.start()
        queues[0].submit_jobs([{"task_id": "fault.stall", "resource_id": f"r{n}",
                                "params": {"n": n, "log": log_path, "seconds": JOB_SECONDS}}
                               for n in range(JOBS)])
        wait_until(lambda: os.path.exists(log_path)
                   and open(log_path).read().count("start") == JOBS, timeout=30)
        owners = {queue.process_id: queue._runner.running.keys() for queue in queues}
        assert all(owners.values()), "both worker queues should run some of the jobs"

        stalled_at = time.monotonic()
        stall(server)
        time.sleep(0.2)
        wait_until(lambda: len(events["job_success"]) == JOBS, timeout=60)
        assert time.monotonic() - stalled_at >= STALL - 0.5, "the stall did not hold Redis"
    finally:
        for queue in queues:
            queue.shutdown(timeout=10)

    log_lines = open(log_path).read().splitlines()
    for n in range(JOBS):
        assert log_lines.count(f"{n} start") == 1, f"job {n} ran more than once"
        assert log_lines.count(f"{n} end") == 1
    assert events["job_retry"] == [] and events["job_fail"] == []
    stats = queues[0].stats()
    assert (stats["pending"], stats["active"], stats["failed"], stats["waiting"]) == (0, 0, 0, 0)
    client = server.client()
    assert client.hget(queues[0].keys.clock, "grace_until") is not None, \
        "greenq should have noticed the stall"


@pytest.mark.timeout(60)
def test_a_dead_process_is_still_flushed_after_a_stall_once_the_grace_is_over(server, tmp_path):
    """The grace after a stall delays recovery, it does not prevent it."""
    from greenq.broker import Broker
    from greenq.keys import Keys
    from greenq import config

    log_path = str(tmp_path / "runs.log")
    keys = Keys("stall", "default")
    # A job leased by a process that will never heartbeat: fetch it by hand.
    queue = GreenQueue(redis_url=server.url, namespace="stall", worker_count=1,
                       flush_stale_timeout=0.2)
    queue.register_task(os.path.join(TASKS, "fault_stall.py"))
    queue.submit_job("fault.stall", resource_id="r", params={"n": 0, "log": log_path, "seconds": 0},
                     retries=1)
    broker = Broker(queue.connection, keys)
    broker.load_scripts()
    rows, _ = broker.fetch(broker.shared, "dead-process", 1, 1000, {})
    assert rows
    broker.heartbeat("dead-process")
    # Pretend Redis stood still for a while: the last worker call is long ago.
    server.client().hset(keys.clock, "seen", 1)
    retried = []
    queue.on("job_retry", retried.append)
    queue.start()
    try:
        began = time.monotonic()
        wait_until(lambda: retried, timeout=config.STALL_GRACE + 20)
        waited = time.monotonic() - began
        wait_until(lambda: os.path.exists(log_path) and "0 end" in open(log_path).read(), timeout=20)
    finally:
        queue.shutdown(timeout=10)
        broker.close()
    # Not before the grace: the stall made every silence suspect.
    assert waited >= config.STALL_GRACE - 1.0
    assert retried[0].id == rows[0].decode()
