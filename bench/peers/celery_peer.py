"""Celery: the gevent pool (`celery worker -P gevent -c N`, one worker per
process), the Redis broker (redis-py uses hiredis when it is installed), no
result backend, acks as default (early), default prefetch multiplier (4).

Workers run with --without-gossip --without-mingle --without-heartbeat, the
flags Celery's docs suggest when workers need not talk to each other: they
only add broker traffic and start-up time. Celery has no bulk submit: a
group's apply_async publishes its tasks one by one in one producer, which is
what W1_submit_bulk measures.
"""

import os
import sys

from celery import Celery, group

from bench.peers import common

NAMESPACE = os.environ["BENCH_PEER_NS"]

app = Celery(NAMESPACE, broker=os.environ["BENCH_PEER_REDIS_URL"])
app.conf.update(
    task_ignore_result=True,
    task_default_queue=NAMESPACE,
    # Every kombu key under the namespace, so cleaning a shared Redis finds them.
    broker_transport_options={"global_keyprefix": f"{NAMESPACE}:"},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.job", ignore_result=True)
def job(params):
    common.perform(params)


class Peer:
    name = "celery"
    packages = ("celery", "kombu", "redis", "hiredis", "gevent")
    bulk = True
    absent = {}

    def submit_each(self, params_iterable) -> None:
        for params in params_iterable:
            job.delay(params)

    def submit_bulk(self, params_list) -> None:
        group(job.s(params) for params in params_list).apply_async()

    def worker_commands(self, concurrency: int) -> list[list[str]]:
        celery = os.path.join(os.path.dirname(sys.executable), "celery")
        return [[celery, "-A", "bench.peers.celery_peer", "worker", "-P", "gevent", "-c", str(concurrency),
                 "-n", f"w{index}-{NAMESPACE}@%h", "-Q", NAMESPACE, "-l", "WARNING",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"]
                for index in range(common.PROCESSES)]

    def close(self) -> None:
        app.close()
