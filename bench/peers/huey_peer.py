"""Huey: RedisHuey (blocking BRPOP fetch, no result storage) with greenlet
workers, `huey_consumer -k greenlet -w N`, one consumer per process.

Huey has no bulk submit, so W1_submit_bulk is absent. PriorityRedisHuey is
not used: it polls a sorted set instead of blocking on a list, and these jobs
have no priorities.
"""

import os
import sys

if os.environ.get("BENCH_PEER_WORKER") == "1":
    # huey_consumer does not patch; its docs say the greenlet worker type
    # needs the application to monkey-patch, as early as possible.
    from gevent import monkey

    monkey.patch_all()

from huey import RedisHuey  # noqa: E402
from redis import ConnectionPool  # noqa: E402

from bench.peers import common  # noqa: E402

# Each greenlet worker blocks on its own connection (BRPOP): size the pool.
huey = RedisHuey(os.environ["BENCH_PEER_NS"], results=False, clean_name=False,
                 connection_pool=ConnectionPool.from_url(os.environ["BENCH_PEER_REDIS_URL"],
                                                         max_connections=common.POOL_LIMIT))


@huey.task()
def job(params):
    common.perform(params)


class Peer:
    name = "huey"
    packages = ("huey", "redis", "hiredis", "gevent")
    bulk = False
    absent = {}

    def submit_each(self, params_iterable) -> None:
        for params in params_iterable:
            job(params)

    def worker_commands(self, concurrency: int) -> list[list[str]]:
        consumer = os.path.join(os.path.dirname(sys.executable), "huey_consumer")
        return [[consumer, "bench.peers.huey_peer.huey", "-k", "greenlet", "-w", str(concurrency), "-q"]
                for _ in range(common.PROCESSES)]

    def close(self) -> None:
        huey.storage.pool.disconnect()
