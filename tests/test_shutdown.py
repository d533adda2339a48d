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
