"""The ceilings of W2 and W3: what the same processes reach running only the
job itself, with no queue at all. Every job records itself in Redis (one
redis-py pipeline, bench/peers/common.py), and that record costs the worker
process more CPU than greenq's own share of a job; so no queue can drain
faster (W2) or closer to the ideal (W3) than this on the same machine, and
greenq's figures are best read as a share of it.

    python -m bench.ceiling JOBS GREENLETS [SLEEP]   (one process; W2/W3 start two)

Each process spawns JOBS calls of common.perform (sleeping SLEEP seconds
first, as W3's jobs do) on a pool of GREENLETS greenlets, as a worker child
would run them, with the record's key prefix
from $BENCH_CEILING_KEY and the Redis from $BENCH_PEER_REDIS_URL; the span
is read from the records, as for W2.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent.pool  # noqa: E402
import redis  # noqa: E402

from bench.peers import common  # noqa: E402
from bench.peers.common import PROCESSES, job_params  # noqa: E402

KEY_ENV = "BENCH_CEILING_KEY"
URL_ENV = "BENCH_PEER_REDIS_URL"  # the Redis the jobs record in (bench.workloads sets it)


def drain_without_queue(client: redis.Redis, key: str, jobs: int, greenlets: int,
                        timeout: float, sleep: float = 0.0) -> float:
    """Seconds from the first record's start to the last one's finish, with
    PROCESSES processes of `greenlets` greenlets sharing `jobs`. The
    processes start together, once both are up (as W2's jobs are queued
    before its workers start)."""
    env = {**os.environ, KEY_ENV: key}
    share = [jobs // PROCESSES + (1 if i < jobs % PROCESSES else 0) for i in range(PROCESSES)]
    children = [subprocess.Popen([sys.executable, "-m", "bench.ceiling", str(n), str(greenlets),
                                  str(sleep)], env=env, stdin=subprocess.DEVNULL)
                for n in share]
    try:
        deadline = time.monotonic() + timeout
        while int(client.get(f"{key}:ready") or 0) < PROCESSES:
            if time.monotonic() > deadline or any(c.poll() is not None for c in children):
                raise RuntimeError("bench.ceiling processes did not get ready")
            time.sleep(0.01)
        client.rpush(f"{key}:go", *["go"] * PROCESSES)
        for child in children:
            if child.wait(timeout=timeout) != 0:
                raise RuntimeError(f"bench.ceiling process exited with {child.returncode}")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return common.span_seconds(client, key)


def main(argv: list[str]) -> int:
    jobs, greenlets = int(argv[0]), int(argv[1])
    sleep = float(argv[2]) if len(argv) > 2 else 0.0
    key = os.environ[KEY_ENV]
    params = job_params(key, **({"s": sleep} if sleep else {}))
    signals = redis.Redis.from_url(os.environ[URL_ENV])
    signals.incr(f"{key}:ready")
    signals.blpop([f"{key}:go"], timeout=0)
    pool = gevent.pool.Pool(greenlets)
    for _ in range(jobs):
        pool.spawn(common.perform, params)
    pool.join(raise_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
