"""Shutdown with a real redis-server: after a start() Redis refused, with
Redis stalled (the timeout still holds), with a fetch that Redis ran for a
fetcher the stop had already killed, and what the stop says in the log."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid

import gevent
import gevent.event
import gevent.server
import gevent.socket
import pytest
import redis
from gevent import monkey

from conftest import TASKS, wait_until
from redis_server import RedisServer

SLOW = os.path.join(TASKS, "fault_slow.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(TASKS)))


def prefix_of(namespace: str) -> str:
    return f"{namespace}:{{default}}:"


def worker_messages(caplog) -> list[str]:
    return [rec.getMessage() for rec in caplog.records if rec.name == "greenq.worker"]


def blocked_in_blmove(r) -> bool:
    return any(client.get("cmd") == "blmove" for client in r.client_list())


# -- after a failed start ------------------------------------------------------


def test_shutdown_after_a_start_redis_refused_returns_quietly_even_twice(
        make_queue, r, redis_url, namespace, caplog):
    caplog.set_level(logging.WARNING, logger="greenq")
    # A user that may load scripts but not touch this queue's keys: start()'s
    # first heartbeat is refused (an ACL mistake; an outage there acts alike).
    user, password = "gq-" + uuid.uuid4().hex[:8], uuid.uuid4().hex
    r.execute_command("ACL", "SETUSER", user, "on", ">" + password, "resetkeys",
                      "~elsewhere:*", "+@all")
    try:
        url = f"redis://{user}:{password}@" + redis_url.split("://", 1)[1]
        queue = make_queue("core_echo", redis_url=url)
        with pytest.raises(redis.exceptions.NoPermissionError):
            queue.start()

        queue.shutdown()
        queue.shutdown()
    finally:
        r.execute_command("ACL", "DELUSER", user)
    assert r.keys(namespace + "*") == []
    assert [rec.getMessage() for rec in caplog.records if rec.name.startswith("greenq.")
            and rec.name != "greenq.queue"] == []  # (the queue may warn about the server)


# -- what the stop logs ----------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_hurried_stop_says_it_was_asked_to_stop_at_once_not_that_a_timeout_passed(
        make_queue, caplog):
    caplog.set_level(logging.WARNING, logger="greenq")
    queue = make_queue(SLOW, worker_count=2)
    queue.start()
    [task] = queue.registry.tasks.values()
    runs = task.perform.__globals__["runs"]
    queue.submit_jobs([{"task_id": "fault.slow", "params": {"n": n, "seconds": 60}}
                       for n in range(2)])
    wait_until(lambda: len(runs) == 2)

    stopping = gevent.spawn(queue.shutdown)  # graceful: no timeout
    gevent.sleep(0.2)
    queue.hurry_shutdown()  # what a second SIGINT does
    stopping.get(timeout=10)

    assert worker_messages(caplog) == [
        "asked to stop at once: giving 2 running jobs back to the queue"]
    assert queue.stats()["pending"] == 2


@pytest.mark.timeout(60)
def test_a_stop_whose_timeout_passed_names_the_timeout(make_queue, caplog):
    caplog.set_level(logging.WARNING, logger="greenq")
    queue = make_queue(SLOW, worker_count=2)
    queue.start()
    [task] = queue.registry.tasks.values()
    runs = task.perform.__globals__["runs"]
    queue.submit_job("fault.slow", params={"n": 0, "seconds": 60})
    wait_until(lambda: len(runs) == 1)

    queue.shutdown(timeout=0.3)

    assert worker_messages(caplog) == [
        "shutdown timeout (0.3 s) passed: giving 1 running job back to the queue"]


def read_blocking(fd: int) -> bytes:
    """os.read that holds the hub (gevent made the pipe non-blocking)."""
    sleep = monkey.get_original("time", "sleep")
    while True:
        try:
            return os.read(fd, 100)
        except BlockingIOError:
            sleep(0.005)


SUBMIT_ON_CUE = r'''
import sys
from greenq import GreenQueue
queue = GreenQueue(redis_url=sys.argv[1], namespace=sys.argv[2])
queue.stats()  # connected
print("ready", flush=True)
sys.stdin.readline()
queue.submit_job("fault.slow", params={"n": 1})
print("submitted", flush=True)
'''


@pytest.mark.timeout(60)
def test_a_job_leased_by_the_wait_a_stop_interrupts_is_given_back_with_that_reason(
        make_queue, redis_url, namespace, r, caplog):
    """The worker waits in Redis; a job is submitted and leased to it while
    its hub is held (so its fetcher cannot read the reply), then it stops:
    the stop kills the fetcher and gives the job back. The line says so, not
    that a reply was lost to Redis trouble."""
    caplog.set_level(logging.WARNING, logger="greenq")
    queue = make_queue(SLOW, worker_count=1)
    queue.start()
    wait_until(lambda: blocked_in_blmove(r))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    submitter = subprocess.Popen([sys.executable, "-c", SUBMIT_ON_CUE, redis_url, namespace],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert submitter.stdout.readline() == b"ready\n"
        # From here on nothing yields to the hub until shutdown(): plain
        # os.read/os.write on the pipes block this whole process.
        os.write(submitter.stdin.fileno(), b"go\n")
        assert read_blocking(submitter.stdout.fileno()) == b"submitted\n"
        monkey.get_original("time", "sleep")(0.1)  # Redis runs the pipelined fetch
        queue.shutdown()
    finally:
        submitter.kill()
        submitter.wait()

    assert [m for m in worker_messages(caplog) if "giving back" in m] == [
        "giving back 1 job leased by the wait this stop interrupted"]
    assert r.llen(prefix_of(namespace) + "pending") == 1
