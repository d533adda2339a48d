"""Fixtures: one private redis-server per session, a fresh namespace per test.

The suite runs under gevent's monkey-patching (tools/test starts pytest
through `python -m gevent.monkey`), as embedding programs do."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

from greenq import GreenQueue

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)

from redis_server import RedisServer  # noqa: E402

# `redis_cluster`, a local Redis Cluster, for the tests that ask for it.
pytest_plugins = ["cluster_fixtures"]

TASKS = os.path.join(TESTS, "tasks")


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def r(redis_server):
    """A raw client (bytes replies) to assert on Redis state."""
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def make_queue(redis_url, namespace):
    """make_queue(*task_specs, **GreenQueue kwargs) -> a queue on the test Redis,
    in this test's namespace, shut down at teardown. Task specs that are bare
    names are files in tests/tasks/."""
    queues = []

    def make(*tasks, **kwargs):
        kwargs.setdefault("redis_url", redis_url)
        kwargs.setdefault("namespace", namespace)
        queue = GreenQueue(**kwargs)
        for spec in tasks:
            if isinstance(spec, str) and not spec.endswith(".py") and "." not in spec:
                spec = os.path.join(TASKS, spec + ".py")
            queue.register_task(spec)
        queues.append(queue)
        return queue

    yield make
    for queue in queues:
        queue.shutdown(timeout=5)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01):
    """Poll `predicate` until truthy; fail the test (not hang) after `timeout`."""
    import time

    import gevent

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        gevent.sleep(interval)
