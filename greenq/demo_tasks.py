"""The tasks `greenq demo` runs: I/O-bound jobs that also check the resource
lock from the outside (a Redis counter per resource: two holders at once
would push it past 1) and record their submit-to-start latency."""

from __future__ import annotations

import os
import random
import time

import gevent
import redis

import greenq

URL_ENV = "GREENQ_DEMO_REDIS_URL"
PREFIX_ENV = "GREENQ_DEMO_PREFIX"
_client = None


def client() -> redis.Redis:
    global _client
    if _client is None:
        pool = redis.BlockingConnectionPool.from_url(os.environ[URL_ENV], max_connections=16)
        _client = redis.Redis(connection_pool=pool)
    return _client


@greenq.task("demo.fetch", timeout=10.0)
def fetch(params):
    """Pretend to call a slow API for one resource (5-25 ms)."""
    started = time.time()
    prefix = os.environ[PREFIX_ENV]
    busy_key = f"{prefix}busy:{params['resource']}"
    pipe = client().pipeline(transaction=False)
    pipe.incr(busy_key)
    pipe.rpush(f"{prefix}latency", started - params["submitted"])
    holders = pipe.execute()[0]
    if holders != 1:
        client().incr(f"{prefix}overlaps")
    gevent.sleep(random.uniform(0.005, 0.025))
    client().decr(busy_key)
