"""What every peer shares: the workloads (counts and timing), how a job records
itself in Redis, the statistics and the result JSON of bench/README's schema.

Imports only the standard library and redis-py, because it runs inside each
peer's own virtualenv (bench/peers/venvs.py), where greenq is not installed.

How a job records itself (the same for every library): one non-transactional
pipeline, one round trip, when the job ends --

    ZADD <k>:span LT <start> first    earliest start  (LT/GT: Redis >= 6.2,
    ZADD <k>:span GT <end>   last     latest finish    exact under races)
    INCR <k>:done                      how many finished (polled for the end)
    RPUSH <k>:lat <start - sent>       only W4 jobs (submit-to-start seconds)
    SADD <k>:pids <pid>                only warm-up jobs (which processes run)

<k> is the key prefix of one measurement, carried in the job's params as "k".
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import math
import os
import platform
import statistics
import time

import redis

log = logging.getLogger("bench.peers")

WORKLOADS = ("W1", "W2", "W3", "W4")
PROCESSES = 2          # worker processes for W2, W3 and W4
BULK_CHUNK = 1000      # jobs per bulk call, as greenq's bench uses
# redis-py 8 caps a connection pool at 100 connections unless told otherwise;
# libraries that hold one connection per busy greenlet (and the job's own
# record below) need more at 200 greenlets a process, or they fail with
# "Too many connections" and retry seconds later.
POOL_LIMIT = 1000


@dataclasses.dataclass(frozen=True)
class Counts:
    submit: int          # W1 jobs
    drain: int           # W2 jobs
    sleepers: int        # W3 jobs
    latency: int         # W4 jobs
    drain_concurrency: int = 50
    sleep_concurrency: int = 200
    sleep_seconds: float = 0.1
    latency_rate: float = 200.0   # W4 jobs per second, submitted one by one

    def ideal_sleep_wall(self) -> float:
        """W3's ideal: every slot busy all the time (5,000 x 0.1 s / 400 = 1.25 s);
        never below one job's sleep, which matters for --quick's small counts."""
        slots = PROCESSES * self.sleep_concurrency
        return max(self.sleep_seconds, self.sleepers * self.sleep_seconds / slots)


FULL = Counts(submit=20_000, drain=20_000, sleepers=5_000, latency=1_000)
QUICK = Counts(submit=200, drain=200, sleepers=200, latency=50)

UNITS = {  # workload -> (unit, higher_is_better)
    "W1_submit_single": ("jobs/s", True),
    "W1_submit_bulk": ("jobs/s", True),
    "W2_drain": ("jobs/s", True),
    "W3_efficiency": ("ideal/measured", True),
    "W4_latency_p50_ms": ("ms", False),
    "W4_latency_p99_ms": ("ms", False),
}


# -- the job's side ----------------------------------------------------------


def job_params(key_prefix: str, **extra) -> dict:
    return {"k": key_prefix, **extra}


def record_pipeline(pipe, params: dict, started: float, finished: float) -> None:
    """Queue the job's record on a redis-py pipeline (sync or asyncio); the
    caller executes it. See the module docstring for the keys."""
    k = params["k"]
    if "t" in params:
        pipe.rpush(f"{k}:lat", started - params["t"])
    if "w" in params:
        pipe.sadd(f"{k}:pids", os.getpid())
    pipe.zadd(f"{k}:span", {"first": started}, lt=True)
    pipe.zadd(f"{k}:span", {"last": finished}, gt=True)
    pipe.incr(f"{k}:done")


_job_client: redis.Redis | None = None


def perform(params: dict) -> None:
    """The body of every sync library's job. time.sleep is gevent's sleep in a
    monkey-patched worker (Celery -P gevent, dramatiq-gevent, Huey greenlets)."""
    global _job_client
    started = time.time()
    if "s" in params:
        time.sleep(params["s"])
    if _job_client is None:  # one client per worker process, made after any fork
        _job_client = redis.Redis.from_url(os.environ["BENCH_PEER_REDIS_URL"],
                                           max_connections=POOL_LIMIT)
    pipe = _job_client.pipeline(transaction=False)
    record_pipeline(pipe, params, started, time.time())
    pipe.execute()


# -- the runner's side -------------------------------------------------------


def summary(runs: list[float], workload: str) -> dict:
    unit, higher_is_better = UNITS[workload]
    return {"unit": unit, "higher_is_better": higher_is_better, "runs": runs,
            "median": statistics.median(runs), "min": min(runs), "max": max(runs)}


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def wait_done(client: redis.Redis, key_prefix: str, count: int, timeout: float,
              workers_alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while int(client.get(f"{key_prefix}:done") or 0) < count:
        if time.monotonic() > deadline:
            done = int(client.get(f"{key_prefix}:done") or 0)
            raise TimeoutError(f"{done} of {count} jobs done after {timeout:.0f} s")
        if not workers_alive():
            raise RuntimeError("a worker process exited during the measurement")
        time.sleep(0.02)


def span_seconds(client: redis.Redis, key_prefix: str) -> float:
    stamps = dict(client.zrange(f"{key_prefix}:span", 0, -1, withscores=True))
    return stamps[b"last"] - stamps[b"first"]


def latencies_ms(client: redis.Redis, key_prefix: str) -> list[float]:
    return [float(value) * 1000 for value in client.lrange(f"{key_prefix}:lat", 0, -1)]


def paced(params: list[dict], rate: float):
    """Yield params at `rate` per second, each stamped with its send time ("t")
    just before the caller submits it."""
    began = time.monotonic()
    for index, item in enumerate(params):
        delay = began + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield {**item, "t": time.time()}


def delete_matching(client: redis.Redis, pattern: str) -> int:
    deleted, batch = 0, []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def system_info(client: redis.Redis, packages: tuple[str, ...]) -> dict:
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"machine": f"{platform.system()} {platform.machine()} ({platform.node()})",
            "cpu": f"{cpu_model()} x{os.cpu_count()}",
            "python": platform.python_version(),
            "redis": client.info("server")["redis_version"],
            "packages": versions}
