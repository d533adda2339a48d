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
from queue_state import unfinished

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


# -- the timeout holds while Redis is stalled ------------------------------------


@pytest.fixture
def stoppable_server():
    server = RedisServer().start()
    yield server
    server.process.send_signal(signal.SIGCONT)  # in case the test failed mid-stop
    server.close()


@pytest.mark.timeout(150)
def test_shutdown_with_a_timeout_returns_soon_after_it_while_redis_is_stalled(
        make_queue, stoppable_server, namespace):
    """Redis frozen (SIGSTOP) while a job finishes and another runs on: every
    call of the stop (fetch, ownership check, commit, give-back, the last
    heartbeat) would wait out the socket timeout and the back-offs. The stop
    returns within the timeout plus the documented margin, and loses no job:
    the one it could not give back stays leased, for the stale flush."""
    from greenq.worker import SHUTDOWN_MARGIN

    timeout = 1.0
    queue = make_queue(SLOW, redis_url=stoppable_server.url, worker_count=2)
    queue.start()
    [task] = queue.registry.tasks.values()
    runs = task.perform.__globals__["runs"]
    # Both in one fetch, so the fetcher's next call (when the short job ends)
    # is a plain fetch, not a wait the stop may kill.
    short, long = queue.submit_jobs([
        {"task_id": "fault.slow", "params": {"n": 0, "seconds": 0.5}},
        {"task_id": "fault.slow", "params": {"n": 1, "seconds": 60}}])
    wait_until(lambda: len(runs) == 2)
    stoppable_server.process.send_signal(signal.SIGSTOP)
    gevent.sleep(1.0)  # the short job ends: its commit and the next fetch hang

    started = time.monotonic()
    queue.shutdown(timeout=timeout)
    took = time.monotonic() - started
    stoppable_server.process.send_signal(signal.SIGCONT)

    print(f"shutdown(timeout={timeout}) with Redis stalled took {took:.2f} s")
    assert took < timeout + SHUTDOWN_MARGIN + 2.0
    r = stoppable_server.client()
    gevent.sleep(0.2)  # Redis runs what was sent to it during the stall
    owned = r.zrange(prefix_of(namespace) + f"owned:{queue.process_id}", 0, -1)
    assert long.encode() in owned
    # The short job's success was sent during the stall: recorded once Redis
    # ran again, or still leased like the other.
    assert short.encode() in owned or not unfinished(r, prefix_of(namespace) + f"job:{short}")


# -- a fetch Redis ran after the stop killed its fetcher ------------------------


class LateCloseProxy:
    """A TCP proxy in front of Redis that passes on a client's close only when
    released: like a network path or a proxy on which the close reaches
    Redis after commands the client sent later on other connections."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.released = gevent.event.Event()
        self.server = gevent.server.StreamServer(("127.0.0.1", 0), self._relay)

    def start(self) -> "LateCloseProxy":
        self.server.start()
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.server.server_port}/0"

    @staticmethod
    def _pump(source, target) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    return
                target.sendall(data)
        except OSError:
            return

    def _relay(self, downstream, _address) -> None:
        upstream = gevent.socket.create_connection(("127.0.0.1", self.port))
        replies = gevent.spawn(self._pump, upstream, downstream)
        self._pump(downstream, upstream)
        self.released.wait()  # the client closed; Redis learns it only now
        upstream.close()
        replies.kill()

    def close(self) -> None:
        self.released.set()
        self.server.stop(timeout=1)


@pytest.mark.timeout(60)
def test_a_job_leased_by_a_wait_redis_served_after_the_stop_killed_it_goes_back_to_the_queue(
        make_queue, r, redis_server, namespace, caplog):
    caplog.set_level(logging.WARNING, logger="greenq")
    proxy = LateCloseProxy(redis_server.port).start()
    try:
        worker = make_queue(SLOW, redis_url=proxy.url, worker_count=2)
        submitter = make_queue()
        worker.start()
        submitter.submit_job("fault.slow", params={"n": 0, "seconds": 2.0})
        wait_until(lambda: submitter.stats()["active"] == 1 and blocked_in_blmove(r))

        # The stop kills the waiting fetcher, finds nothing leased, and waits
        # for the running job. Redis has not seen the close yet.
        stopping = gevent.spawn(worker.shutdown)
        wait_until(lambda: worker._runner._fetcher.dead)
        gevent.sleep(0.2)  # the stop's first ownership check: one round trip
        assert blocked_in_blmove(r)
        job_id = submitter.submit_job("fault.slow", params={"n": 1})
        job_key = prefix_of(namespace) + f"job:{job_id}"
        # Redis served the dead fetcher's wait: the job is leased to a
        # process that will never run it.
        wait_until(lambda: r.hget(job_key, "owner") == worker.process_id.encode())
        stopping.get(timeout=30)
    finally:
        proxy.close()

    record = r.hgetall(job_key)
    assert record[b"state"] == b"pending" and record[b"attempts"] == b"0", record
    assert r.zcard(prefix_of(namespace) + f"owned:{worker.process_id}") == 0
    assert r.lrange(prefix_of(namespace) + "pending", 0, -1) == [job_id.encode()]
    [line] = [m for m in worker_messages(caplog) if "giving back" in m]
    assert line == ("giving back 1 job leased after this process stopped fetching "
                    "(Redis served the wait of the fetcher it had stopped)")


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
