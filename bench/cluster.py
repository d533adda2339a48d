"""W10 (scale-out): W2's drain on a local Redis Cluster of 3 masters with
partitions=6, against the same drain on one redis-server.

Two cores cannot show a cluster's throughput, so W10 measures what decides
it: the Redis CPU each job costs, summed over the masters and per master
(from INFO commandstats: the usec of the commands greenq sends, EVALSHA,
BLMOVE and WAIT, which include the commands their scripts run), the spread between the busiest and the least
busy master, and the client round trips per job.

The jobs record themselves in the benchmark's own Redis (as in W2), so the
queue's Redis nodes do only the queue's work. Round trips are counted in an
in-process drain, where every script call goes through Broker._send in this
process (the bench wraps it; greenq counts nothing itself).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

import redis

import greenq
from bench.peers import common
from bench.peers.common import PROCESSES
from bench.redis_server import ThrowawayRedis
from bench.workloads import TASKS_FILE, Context, noop_jobs, timeout_for

log = logging.getLogger("bench.cluster")

PARTITIONS = 6
# The test suite's local cluster (tests/redis_cluster.py): one implementation
# of starting and tearing down a cluster, shared rather than copied.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))


# The commands greenq's clients send (INFO commandstats counts the commands
# scripts run inside EVALSHA's own usec as well, so those are left out).
CLIENT_COMMANDS = ("cmdstat_evalsha", "cmdstat_blmove", "cmdstat_wait", "cmdstat_script|load")


def command_usec(port: int) -> int:
    """The usec Redis spent in greenq's commands since its start (INFO commandstats)."""
    stats = redis.Redis(port=port).info("commandstats")
    return sum(int(stats[name]["usec"]) for name in CLIENT_COMMANDS if name in stats)


@contextlib.contextmanager
def counted_round_trips() -> Iterator[list[int]]:
    """Count the round trips of every script call in this process."""
    from greenq import broker

    counter = [0]
    original = broker.Broker._send

    def send(self, *args, **kwargs):
        counter[0] += 1
        return original(self, *args, **kwargs)

    broker.Broker._send = send
    try:
        yield counter
    finally:
        broker.Broker._send = original


def drain(ctx: Context, url: str, namespace: str, n: int, children: int, workers: int,
          ports: list[int], partitions: int | None) -> dict:
    """Queue n no-op jobs, start the workers, wait for the last one. Returns
    jobs/s, the Redis usec per job on each port, and the round trips per
    job when the workers run in this process."""
    key = f"{namespace}:rec"
    q = greenq.GreenQueue(redis_url=url, namespace=namespace, child_process_count=children,
                          worker_count=workers, partitions=partitions)
    q.register_task(TASKS_FILE)
    jobs = noop_jobs(key, n)
    ctx.submit_bulk(q, jobs)
    before = {port: command_usec(port) for port in ports}
    with counted_round_trips() as trips:
        q.start()
        try:
            common.wait_done(ctx.admin, key, n, timeout_for(n))
        finally:
            q.shutdown()
    after = {port: command_usec(port) for port in ports}
    return {"jobs_per_s": n / common.span_seconds(ctx.admin, key),
            "usec_per_job": {port: (after[port] - before[port]) / n for port in ports},
            "round_trips_per_job": trips[0] / n if not children else None}


def balance(cluster, namespace: str) -> None:
    """Give each master as many of the queue's partitions (hash-tag slots)
    as the others, as an operator would with `redis-cli --cluster reshard`
    or CLUSTER SETSLOT: where six hash tags land by CRC16 is chance."""
    from greenq.keys import Keys
    from greenq.nodes import slot_of

    masters = [port for _host, port in cluster.masters()]
    for k in range(PARTITIONS):
        slot = slot_of(Keys(namespace, "default", k).prefix)
        target = masters[k % len(masters)]
        if cluster.node_for_slot(slot)[1] != target:
            cluster.migrate_slot(slot, target)


def w10(ctx: Context, run: int) -> dict:
    from redis_cluster import LocalCluster

    n = ctx.counts.drain
    # No replicas: on two cores they would take CPU from the masters, and
    # commandstats' usec is elapsed time, so preemption would count as work.
    with LocalCluster(masters=3, replicas_per_master=0) as cluster, ThrowawayRedis() as single:
        masters = [port for _host, port in cluster.masters()]
        figures = {}
        for name, url, ports, partitions in (
                ("single", single.url, [single.port], None),
                ("cluster", cluster.url, masters, PARTITIONS)):
            namespaces = [ctx.namespace(f"W10{name}", run), ctx.namespace(f"W10{name}in", run)]
            if partitions:
                for namespace in namespaces:
                    balance(cluster, namespace)
            drained = drain(ctx, url, namespaces[0], n, PROCESSES,
                            ctx.counts.drain_concurrency, ports, partitions)
            inprocess = drain(ctx, url, namespaces[1], n, 0, 100, ports, partitions)
            ctx.clean()
            per_master = list(drained["usec_per_job"].values())
            figures[name] = (drained["jobs_per_s"], sum(per_master), per_master,
                             inprocess["round_trips_per_job"])
            log.info("W10 %s: %.0f jobs/s, Redis usec per job %s, round trips per job %.3f",
                     name, drained["jobs_per_s"], [round(u, 1) for u in per_master],
                     inprocess["round_trips_per_job"])
    single_rate, single_usec, _, single_trips = figures["single"]
    rate, usec, per_master, trips = figures["cluster"]
    return {
        "W10_drain_cluster": rate,
        "W10_drain_single": single_rate,
        "W10_redis_usec_per_job_cluster": usec,
        "W10_redis_usec_per_job_single": single_usec,
        "W10_redis_cpu_cluster_over_single": usec / single_usec,
        "W10_busiest_over_least_busy_master": max(per_master) / max(min(per_master), 1e-9),
        "W10_round_trips_per_job_cluster": trips,
        "W10_round_trips_per_job_single": single_trips,
    }
