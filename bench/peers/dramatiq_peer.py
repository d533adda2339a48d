"""Dramatiq: `dramatiq-gevent` with 2 processes x N greenlets ("threads"),
the Redis broker (redis-py uses hiredis when installed), default middleware
(no results middleware), acks as default.

Dramatiq has no bulk enqueue: a group's run() enqueues its messages one by
one, which is what W1_submit_bulk measures.
"""

import os
import sys

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from bench.peers import common

NAMESPACE = os.environ["BENCH_PEER_NS"]

broker = RedisBroker(namespace=NAMESPACE, connection_pool=redis.ConnectionPool.from_url(
    os.environ["BENCH_PEER_REDIS_URL"], max_connections=common.POOL_LIMIT))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_job")
def job(params):
    common.perform(params)


class Peer:
    name = "dramatiq"
    packages = ("dramatiq", "redis", "hiredis", "gevent")
    bulk = True
    absent = {}

    def submit_each(self, params_iterable) -> None:
        for params in params_iterable:
            job.send(params)

    def submit_bulk(self, params_list) -> None:
        dramatiq.group(job.message(params) for params in params_list).run()

    def worker_commands(self, concurrency: int) -> list[list[str]]:
        command = os.path.join(os.path.dirname(sys.executable), "dramatiq-gevent")
        return [[command, "bench.peers.dramatiq_peer:broker",
                 "--processes", str(common.PROCESSES), "--threads", str(concurrency)]]

    def close(self) -> None:
        broker.close()
