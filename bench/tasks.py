"""The benchmark's tasks. Registered by file path, so that greenq's worker
children (fresh interpreters) load this same file.

Every job records itself as every peer's job does (bench/peers/common.py:
one pipeline at its end: first start, last finish, INCR done, and the W4
latency / warm-up stamps). The benchmark's Redis URL comes from the
environment, which the children inherit.

All tasks share one generous timeout, so the worker's tick (heartbeat and
stale scan) runs at its slowest, once a second: a job sleeping 10 s in W6
stays well inside its lease.
"""

from __future__ import annotations

import os
import time

import redis

import greenq
from bench.peers import common

TIMEOUT = 60.0
URL_ENV = "BENCH_PEER_REDIS_URL"  # the name bench.peers.common.perform reads

_client: redis.Redis | None = None


def client() -> redis.Redis:
    """One client per process. Its pool blocks when all connections are busy
    instead of failing, since 10,000 W6 jobs end at the same moment."""
    global _client
    if _client is None:
        pool = redis.BlockingConnectionPool.from_url(os.environ[URL_ENV], max_connections=100,
                                                     timeout=None)
        _client = redis.Redis(connection_pool=pool)
    return _client


@greenq.task("bench.job", timeout=TIMEOUT)
def job(params):
    """W1-W4 and W5's free jobs: exactly the peers' job (a sleep of params["s"]
    seconds when given, then the record)."""
    common.perform(params)


@greenq.task("bench.noop", timeout=TIMEOUT)
def noop(params):
    """bench.core: greenq's own cost per job, with no record of its own."""
    return None


@greenq.task("bench.stamp", timeout=TIMEOUT)
def stamp(params):
    """W7: sleep until the wall-clock time params["at"], then return the
    time it finished, for its waiter to compare with its wake-up."""
    delay = params["at"] - time.time()
    if delay > 0:
        time.sleep(delay)
    return time.time()


@greenq.task("bench.sleeper", timeout=TIMEOUT)
def sleeper(params):
    """W6: sleep, then the record through a pool that waits for a connection."""
    started = time.time()
    time.sleep(params["s"])
    pipe = client().pipeline(transaction=False)
    common.record_pipeline(pipe, params, started, time.time())
    pipe.execute()


@greenq.task("bench.resource_job", timeout=TIMEOUT)
def resource_job(params):
    """W5: job number params["i"] of resource params["r"].

    At its start it counts itself as running on its resource (INCR) and
    appends its number to the resource's order list; more than one running
    means two jobs of one resource overlapped. The round trip yields to other
    greenlets between the two counts, so an overlap inside one process shows
    too. At its end: uncount, the resource's own first start / last finish,
    and the common record.
    """
    started = time.time()
    k, res = params["k"], f"{params['k']}:res:{params['r']}"
    pipe = client().pipeline(transaction=False)
    pipe.incr(f"{res}:running")
    pipe.rpush(f"{res}:order", params["i"])
    running, _ = pipe.execute()
    finished = time.time()
    pipe = client().pipeline(transaction=False)
    pipe.decr(f"{res}:running")
    if running > 1:
        pipe.incr(f"{k}:overlaps")
    pipe.zadd(f"{res}:span", {"first": started}, lt=True)
    pipe.zadd(f"{res}:span", {"last": finished}, gt=True)
    common.record_pipeline(pipe, params, started, finished)
    pipe.execute()


@greenq.task("bench.limited", timeout=TIMEOUT, rate_limit="1000/s")
def limited(params):
    """W9: the benchmark's job, held to 1,000 starts a second across every
    process of the queue (the rate limit's own log, by Redis' clock)."""
    common.perform(params)
