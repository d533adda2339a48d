"""RQ: `rq worker-pool -n 2 -w rq.worker.SimpleWorker`, no result storage
(result_ttl=0), bulk submit with Queue.enqueue_many in one pipeline.

RQ has no gevent or thread pool in core: a worker runs one job at a time, so
"2 processes" means 2 jobs at once, not 2 x 50. SimpleWorker runs jobs in
the worker process instead of forking one per job; RQ's own performance
notes (docs/benchmark.md) measure it about 6x faster and recommend it for
jobs of a few milliseconds, which these are.

W3 is absent: 5,000 jobs of 100 ms on 2 one-at-a-time workers take about
250 s a run, which says nothing W2 does not (RQ cannot overlap I/O waits).
"""

import itertools
import os
import sys

from redis import Redis
from rq import Queue

from bench.peers import common

NAMESPACE = os.environ["BENCH_PEER_NS"]


class Peer:
    name = "rq"
    packages = ("rq", "redis", "hiredis")
    bulk = True
    absent = {"W3": "an RQ worker runs one job at a time; 2 processes x 1 job would "
                    "take ~250 s per run for 5,000 x 100 ms"}

    def __init__(self) -> None:
        self.connection = Redis.from_url(os.environ["BENCH_PEER_REDIS_URL"])
        self.queue = Queue(NAMESPACE, connection=self.connection)
        # Job ids carry the namespace so that cleaning a shared Redis can find them.
        self.ids = (f"{NAMESPACE}-{n}" for n in itertools.count())

    def submit_each(self, params_iterable) -> None:
        for params in params_iterable:
            self.queue.enqueue(common.perform, params, result_ttl=0, job_id=next(self.ids))

    def submit_bulk(self, params_list) -> None:
        self.queue.enqueue_many([Queue.prepare_data(common.perform, (params,), result_ttl=0,
                                                    job_id=next(self.ids))
                                 for params in params_list])

    def worker_commands(self, concurrency: int) -> list[list[str]]:
        rq = os.path.join(os.path.dirname(sys.executable), "rq")
        return [[rq, "worker-pool", "-n", str(common.PROCESSES), "-w", "rq.worker.SimpleWorker",
                 "-u", os.environ["BENCH_PEER_REDIS_URL"], "-q", NAMESPACE]]

    def close(self) -> None:
        self.connection.close()
