"""Defaults and Redis connection settings. Times are seconds unless named *_ms."""

from __future__ import annotations

import os
from typing import Any

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_NAMESPACE = "greenq"
DEFAULT_QUEUE_ID = "default"
DEFAULT_RETRY_DELAY = 0.0         # seconds before a first retry: at once
DEFAULT_RETRY_BACKOFF = 2.0       # each later retry waits this factor longer
DEFAULT_RETRY_DELAY_MAX = 3600.0  # cap on one retry's wait
DEFAULT_TASK_TIMEOUT = 10.0       # a running job is dead after this long without a heartbeat
DEFAULT_WORKER_COUNT = 100        # concurrent jobs (greenlets) per process
DEFAULT_FLUSH_STALE_TIMEOUT = 30.0  # at most this long between scans for dead jobs
# A succeeded or cancelled job's record (state, result) stays readable this
# long; failed ones stay in the failed queue until retried or deleted.
DEFAULT_RESULT_TTL = 300.0
# A job someone wait()s on keeps its record at least this long after it
# ended, even with result_ttl 0, so its waiters can read how it ended.
WATCHED_RECORD_GRACE = 60.0
DEFAULT_UNKNOWN_TASK_GRACE = 300.0  # a job of a task no fetching worker knows fails after this long
UNKNOWN_TASK_BACKOFF = (1.0, 30.0)  # first and longest wait before such a job is fetched again
MAX_TICK_INTERVAL = 1.0           # heartbeats at least this often, and 4x per smallest timeout
REDIS_STALL = 2.0                 # no worker call reached Redis for this long: Redis stalled
STALL_GRACE = 5.0                 # then periodic stale flushes wait this long for heartbeats
PROCESS_GONE_AFTER = 5.0          # a worker process silent this long (5+ ticks) is no longer live
MAX_PARAMS_BYTES = 1024 * 1024    # encoded params above this are refused at submit and fetch
MAX_ID_LENGTH = 512               # task, resource and job ids, in characters

SOCKET_TIMEOUT = 10.0             # no Redis answer within this long = connection broken
CONNECT_TIMEOUT = 5.0
# BLMOVE wait when idle; well under SOCKET_TIMEOUT. A delayed job coming
# due ends it earlier (wake.lua); this bounds the wait if that call fails.
FETCH_BLOCK_SECONDS = 1
SHARED_POOL_SIZE = 4              # connections for submit/stats/admin calls, per process
SCRIPT_BATCH = 100                # jobs per script call (bulk, commit, fetch): keeps each under ~3 ms of Redis
PROMOTE_BATCH = 100               # delayed jobs that came due, moved to pending per fetch at most
RECONNECT_BACKOFF = (0.05, 2.0)   # first and longest wait between retries when Redis is gone
REPLICA_WAIT = 5.0                # replicas=N: a write's replicas must confirm within this long
# Upper bounds (seconds) of the job duration and wait histograms' buckets, and
# the minutes of outcome history kept per partition: scripts/include/metrics.lua
# holds the same figures (tests/test_metrics.py checks they agree).
# Twelve buckets: each costs a /metrics line per task and histogram (100
# tasks: 2,400 lines), and prometheus_client formats about 50,000 a second.
HISTOGRAM_BOUNDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0)
HISTORY_MINUTES = 1440


def redis_url_from_env() -> str:
    return os.environ.get("GREENQ_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def split_cluster_url(url: str) -> tuple[str, list[tuple[str, int]] | None]:
    """For a `redis+cluster://[user:password@]host:port[,host:port...][/]`
    URL: a plain URL of its first node (for the connection settings every
    node shares) and every host:port it names. Any other URL: (url, None)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES:
        return url, None
    userinfo, at, hosts_part = rest.rpartition("@")
    hosts_part, _, tail = hosts_part.partition("/")
    query = ""
    if "?" in hosts_part:
        hosts_part, _, query = hosts_part.partition("?")
    elif "?" in tail:
        tail, _, query = tail.partition("?")
    if tail.strip("/") not in ("", "0"):
        raise ValueError(f"bad Redis URL: a Redis Cluster has only database 0, not {tail!r}")
    seeds = []
    for item in hosts_part.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad Redis URL: {scheme}:// wants host:port[,host:port...], "
                             f"not {item.strip()!r}")
        seeds.append((host.strip("[]"), int(port)))
    first = f"{CLUSTER_SCHEMES[scheme]}://{userinfo}{at}{seeds[0][0]}:{seeds[0][1]}/0"
    return first + (f"?{query}" if query else ""), seeds


def connection_kwargs(redis_url: str | None, redis_config: dict[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for a redis-py connection pool (its connection
    class included). URLs: redis://, rediss://, unix:// as redis-py parses
    them, and redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]
    (greenq/sentinel.py).

    Timeouts are set explicitly, and redis-py's own retries are off: a
    re-sent script must be greenq's decision (every script is idempotent or
    lease-checked, and greenq retries with back-off itself).
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from . import sentinel
    from .channel import outage_aware

    if redis_url is not None and redis_config is not None:
        raise ValueError("give redis_url or redis_config, not both")
    if redis_config is not None:
        if not isinstance(redis_config, dict):
            raise TypeError("redis_config must be a dict of redis-py connection settings")
        kwargs = dict(redis_config)
        if kwargs.pop("ssl", False):
            kwargs["connection_class"] = redis.SSLConnection
    else:
        url = redis_url or redis_url_from_env()
        try:
            kwargs = sentinel.parse_url(url) if sentinel.is_sentinel_url(url) \
                else redis.connection.parse_url(url)
        except ValueError as exc:
            raise ValueError(f"bad Redis URL: {exc}") from None
    # Every mode: a node that became a replica is an outage (channel.py).
    kwargs["connection_class"] = outage_aware(kwargs.get("connection_class", redis.Connection))
    kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT)
    kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    kwargs["retry_on_timeout"] = False
    return kwargs


def describe(kwargs: dict[str, Any]) -> str:
    """Where a connection goes, without the password."""
    if kwargs.get("master_locator") is not None:
        return f"{kwargs['master_locator'].describe()}/{kwargs.get('db', 0)}"
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
