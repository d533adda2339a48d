"""arq: asyncio workers (`arq bench.peers.arq_peer.WorkerSettings`, one per
process) with max_jobs concurrent jobs each, no result kept (keep_result=0),
arq's defaults otherwise -- including poll_delay 0.5 s: an arq worker polls
its queue (a sorted set) instead of blocking, which shows in W4's latency.

arq has no bulk enqueue, so W1_submit_bulk is absent. Jobs sleep with
asyncio.sleep and record themselves with redis.asyncio (same commands as
common.perform). arq 0.28 requires redis<6, so its venv has redis 5.3.
"""

import asyncio
import itertools
import os
import sys
import time

import redis.asyncio
from arq import create_pool
from arq.connections import RedisSettings

from bench.peers import common

NAMESPACE = os.environ["BENCH_PEER_NS"]
REDIS_URL = os.environ["BENCH_PEER_REDIS_URL"]


async def job(ctx, params):
    started = time.time()
    if "s" in params:
        await asyncio.sleep(params["s"])
    pipe = ctx["bench_redis"].pipeline(transaction=False)
    common.record_pipeline(pipe, params, started, time.time())
    await pipe.execute()


async def startup(ctx):
    ctx["bench_redis"] = redis.asyncio.Redis.from_url(REDIS_URL, max_connections=common.POOL_LIMIT)


async def shutdown(ctx):
    await ctx["bench_redis"].aclose()


class WorkerSettings:
    functions = [job]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    queue_name = NAMESPACE
    max_jobs = int(os.environ.get("BENCH_PEER_CONCURRENCY", "50"))
    keep_result = 0


class Peer:
    name = "arq"
    packages = ("arq", "redis", "hiredis")
    bulk = False
    absent = {}

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(
            create_pool(RedisSettings.from_dsn(REDIS_URL), default_queue_name=NAMESPACE))
        # Job ids carry the namespace so that cleaning a shared Redis can find them.
        self.ids = (f"{NAMESPACE}-{n}" for n in itertools.count())

    def submit_each(self, params_iterable) -> None:
        async def submit_all():
            for params in params_iterable:
                await self.pool.enqueue_job("job", params, _job_id=next(self.ids))

        self.loop.run_until_complete(submit_all())

    def worker_commands(self, concurrency: int) -> list[list[str]]:
        arq = os.path.join(os.path.dirname(sys.executable), "arq")
        return [[arq, "bench.peers.arq_peer.WorkerSettings"] for _ in range(common.PROCESSES)]

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.aclose())
        self.loop.close()
