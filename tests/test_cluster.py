"""Partitioned queues on a real local Redis Cluster (3 masters, 3 replicas;
tests/redis_cluster.py) and on a single node: placement, the queue-wide
calls, ordering per resource, and the cluster's own events (a slot moving,
a failover, a master killed) while workers run."""

from __future__ import annotations

import collections
import os
import time

import gevent
import pytest
import redis

from conftest import TASKS, wait_until
from greenq import GreenQueue
from greenq.nodes import slot_of

LOG_TASK = os.path.join(TASKS, "cluster_log.py")


def runs(r: redis.Redis, log: str) -> list[tuple[str, str, str, str]]:
    return [tuple(line.decode().split()) for line in r.lrange(log, 0, -1)]


def check_runs(entries: list, expected: dict[str, list[str]], once: bool = True) -> None:
    """Every job of `expected` (resource -> names in submit order) ran, in
    that order per resource, never two of a resource at once; `once`: and
    each exactly once."""
    running: dict[str, str] = {}
    order: dict[str, list[str]] = collections.defaultdict(list)
    for kind, resource, name, _pid in entries:
        if kind == "start":
            assert resource not in running, f"{resource}: {name} started while {running[resource]} ran"
            running[resource] = name
            order[resource].append(name)
        else:
            assert running.pop(resource) == name
    for resource, names in expected.items():
        got = order[resource] if once else list(dict.fromkeys(order[resource]))
        assert got == names, resource


def submit_spread(queue: GreenQueue, url: str, log: str, resources: int, per_resource: int,
                  **params) -> dict[str, list[str]]:
    expected: dict[str, list[str]] = {}
    jobs = []
    for n in range(per_resource):
        for k in range(resources):
            resource, name = f"res{k}", f"j{k}-{n}"
            expected.setdefault(resource, []).append(name)
            jobs.append({"task_id": "cluster.log", "resource_id": resource,
                         "params": {"url": url, "log": log, "name": name, "resource": resource,
                                    **params}})
    queue.submit_jobs(jobs)
    return expected


@pytest.fixture
def cluster_queue(redis_cluster, namespace):
    queues = []

    def make(**kwargs):
        kwargs.setdefault("redis_url", redis_cluster.url)
        kwargs.setdefault("namespace", namespace)
        queue = GreenQueue(**kwargs)
        queue.register_task(LOG_TASK)
        queues.append(queue)
        return queue

    yield make
    for queue in queues:
        queue.shutdown(timeout=5)


def test_a_partitioned_queue_spreads_over_every_master_and_keeps_resource_order(
        redis_cluster, cluster_queue, redis_server, r, namespace):
    queue = cluster_queue(partitions=6, worker_count=50)
    expected = submit_spread(queue, redis_server.url, "log", resources=30, per_resource=5)
    # Jobs without a resource spread by their id.
    free_ids = queue.submit_jobs([{"task_id": "cluster.log", "params": {
        "url": redis_server.url, "log": "log", "name": f"free{n}", "resource": f"free{n}"}}
        for n in range(60)])
    stats = queue.stats()
    assert (stats["pending"], stats["waiting"]) == (90, 120)  # one per resource runnable
    # Every master holds some of the queue: 6 hash tags over 3 masters.
    holders = {redis_cluster.node_for_slot(slot_of(broker.keys.prefix)) for broker in queue.brokers}
    assert len(holders) >= 2 and len(queue.brokers) == 6
    per_partition = [sum(broker.stats()[n] for n in ("pending", "waiting"))
                     for broker in queue.brokers]
    assert sum(per_partition) == 210 and min(per_partition) > 0
    queue.start()
    wait_until(lambda: r.llen("log") == 2 * 210, timeout=60)
    check_runs(runs(r, "log"), expected)
    wait_until(lambda: queue.stats()["active"] == 0, timeout=10)
    assert queue.stats() | {"workers": 1} == {"pending": 0, "active": 0, "waiting": 0, "failed": 0,
                                               "locked_resources": 0, "scheduled": 0, "workers": 1}
    assert all(queue.get_job(job_id).state == "succeeded" for job_id in free_ids)


def test_one_job_by_id_wait_cancel_and_the_failed_queue_see_every_partition(
        cluster_queue, redis_server, r):
    queue = cluster_queue(partitions=6, worker_count=20)
    params = {"url": redis_server.url, "log": "log2"}
    ok = [queue.submit_job("cluster.log", resource_id=f"r{n}",
                           params={**params, "name": f"ok{n}", "resource": f"r{n}"})
          for n in range(12)]
    bad = [queue.submit_job("cluster.log", resource_id=f"b{n}",
                            params={**params, "name": f"bad{n}", "resource": f"b{n}",
                                    "fail": True}) for n in range(12)]
    late = queue.submit_job("cluster.log", resource_id="late", delay=60,
                            params={**params, "name": "late", "resource": "late"})
    assert {queue.get_job(job_id).state for job_id in ok + bad} == {"pending"}
    assert queue.get_job(late).state == "scheduled"
    assert queue.cancel(late) is True and queue.get_job(late).state == "cancelled"
    assert queue.cancel("no-such-job") is False and queue.get_job("no-such-job") is None
    queue.start()
    assert [queue.wait(job_id, timeout=30).result for job_id in ok] == \
        [f"ok{n}" for n in range(12)]
    assert {queue.wait(job_id, timeout=30).state for job_id in bad} == {"failed"}
    failed = queue.failed_jobs(limit=100)
    assert sorted(job.id for job in failed) == sorted(bad)
    assert len(queue.failed_jobs(limit=5)) == 5
    assert queue.stats()["failed"] == 12
    assert queue.retry_failed_jobs(job_ids=bad[:4]) == 4
    wait_until(lambda: queue.stats()["failed"] == 12, timeout=30)  # they fail again
    assert queue.delete_failed_jobs(task_id="cluster.log") == 12
    assert queue.stats()["failed"] == 0 and queue.failed_jobs() == []


def test_schedules_live_in_their_resource_partition_and_fire(cluster_queue, redis_server, r):
    queue = cluster_queue(partitions=6, worker_count=5)
    params = {"url": redis_server.url, "log": "sched", "name": "tick", "resource": "ticker"}
    queue.add_schedule("tick", "cluster.log", every=1, params=params)
    queue.add_schedule("tock", "cluster.log", every=3600, resource_id="shared",
                       params={**params, "resource": "shared"})
    assert [s["name"] for s in queue.schedules()] == ["tick", "tock"]
    holders = [b for b in queue.brokers if b.shared.zscore(b.keys.schedules, "tock") is not None]
    assert holders == [queue.brokers[queue._partition_set().of("shared", "tock")]]
    # Moving a schedule to another resource moves it to that partition, once.
    queue.add_schedule("tock", "cluster.log", every=3600, resource_id="elsewhere", params=params)
    assert sorted(s["name"] for s in queue.schedules()) == ["tick", "tock"]
    queue.start()
    wait_until(lambda: r.llen("sched") >= 4, timeout=15)
    assert queue.remove_schedule("tick") is True and queue.remove_schedule("tock") is True
    assert queue.schedules() == []


def test_the_number_of_partitions_is_stored_and_a_different_one_refused(redis_cluster,
                                                                        cluster_queue, r):
    first = cluster_queue(partitions=4)
    first.submit_job("cluster.log", params={})
    assert len(cluster_queue().brokers) == 4  # None: the stored number
    with pytest.raises(ValueError, match="has 4 partitions in Redis.*partitions=3 differs"):
        cluster_queue(partitions=3).submit_job("cluster.log", params={})
    single = cluster_queue(queue_id="used")
    single.submit_job("cluster.log", params={})
    with pytest.raises(ValueError, match="has 1 partition in Redis"):
        cluster_queue(queue_id="used", partitions=2).submit_job("cluster.log", params={})
    # A queue used before partitions existed has its keys but no stored number.
    from greenq.keys import partitions_key
    redis_cluster.cluster_client().delete(partitions_key(single.namespace, "used"))
    with pytest.raises(ValueError, match="in use with one partition"):
        cluster_queue(queue_id="used", partitions=2).submit_job("cluster.log", params={})
    assert cluster_queue(queue_id="used").stats()["pending"] == 1
    for bad in (0, -1, True, 1.5, "2", 10_000):
        with pytest.raises(ValueError, match="partitions must be"):
            GreenQueue(redis_url=redis_cluster.url, partitions=bad)


def test_a_single_node_queue_with_partitions_runs_like_one_with_one(make_queue, redis_server,
                                                                    r, namespace):
    queue = make_queue(LOG_TASK, partitions=4, worker_count=30)
    expected = submit_spread(queue, redis_server.url, "single", resources=12, per_resource=4)
    prefixes = {key.decode().split("}")[0] for key in r.keys(f"{namespace}:*")}
    assert prefixes == {f"{namespace}:{{default:{k}" for k in range(4)} | {f"{namespace}:{{default"}
    queue.start()
    wait_until(lambda: r.llen("single") == 2 * 48, timeout=30)
    check_runs(runs(r, "single"), expected)


def test_connections_per_node_do_not_grow_with_the_worker_count(redis_cluster, cluster_queue,
                                                                namespace):
    def connections() -> dict[int, int]:
        counts = {}
        for _host, port in redis_cluster.masters():
            clients = redis_cluster.client(port).client_list()
            counts[port] = sum(1 for c in clients if c.get("name", "") == "" and c["cmd"] != "client|list")
        return counts

    before = connections()
    for workers in (10, 300):
        queue = cluster_queue(partitions=6, worker_count=workers, queue_id=f"conn{workers}")
        queue.submit_jobs([{"task_id": "cluster.log", "resource_id": f"x{n}", "params": {
            "url": "redis://127.0.0.1:1/0", "log": "x", "name": "x", "resource": "x",
            "sleep": 0}} for n in range(0)])
        queue.start()
        gevent.sleep(1.5)
        now = connections()
        per_node = {port: now[port] - before.get(port, 0) for port in now}
        partitions_on = collections.Counter(
            redis_cluster.node_for_slot(slot_of(b.keys.prefix))[1] for b in queue.brokers)
        for port, opened in per_node.items():
            # Fetchers (one per partition there), the committer, the shared
            # pool (at most 4), the scheduler's reads through it: never more.
            assert opened <= partitions_on[port] + 1 + 4, (workers, port, opened)
        queue.shutdown(timeout=5)
        wait_until(lambda: sum(connections().values()) <= sum(before.values()) + 1, timeout=10)


# -- cluster events while workers run -----------------------------------------------


def _partition_slot_on(queue: GreenQueue, redis_cluster) -> tuple[int, int, int]:
    """A partition's slot, its master's port, and another master's port."""
    broker = queue.brokers[0]
    slot = slot_of(broker.keys.prefix)
    source = redis_cluster.node_for_slot(slot)[1]
    target = next(port for _host, port in redis_cluster.masters() if port != source)
    return slot, source, target


def test_a_slot_migrating_under_running_workers_loses_and_doubles_nothing(
        redis_cluster, cluster_queue, redis_server, r):
    queue = cluster_queue(partitions=3, worker_count=20)
    expected = submit_spread(queue, redis_server.url, "mig", resources=15, per_resource=8,
                             sleep=0.02)
    slot, source, target = _partition_slot_on(queue, redis_cluster)
    queue.start()
    wait_until(lambda: r.llen("mig") > 20, timeout=30)
    # Half the partition's keys move, so its scripts meet ASK and TRYAGAIN...
    migration = redis_cluster.begin_migration(slot, target)
    gevent.sleep(0.5)
    # ...then the slot is the target's: MOVED.
    redis_cluster.finish_migration(migration)
    wait_until(lambda: r.llen("mig") == 2 * 120, timeout=60)
    check_runs(runs(r, "mig"), expected)
    assert queue.stats()["failed"] == 0
    # The submits after the move go to the new owner.
    job = queue.submit_job("cluster.log", resource_id="res0", params={
        "url": redis_server.url, "log": "mig2", "name": "after", "resource": "res0"})
    assert queue.wait(job, timeout=20).state == "succeeded"


def test_a_failover_and_a_killed_master_under_running_workers(
        redis_cluster, cluster_queue, redis_server, r):
    errors = []
    queue = cluster_queue(partitions=3, worker_count=20)
    queue.on("error", errors.append)
    expected = submit_spread(queue, redis_server.url, "fo", resources=10, per_resource=10,
                             sleep=0.02)
    slot, source, _target = _partition_slot_on(queue, redis_cluster)
    queue.start()
    wait_until(lambda: r.llen("fo") > 20, timeout=30)
    # A replica takes over (CLUSTER FAILOVER): its script cache is empty
    # (NOSCRIPT), and the old master answers MOVED.
    redis_cluster.failover(source)
    wait_until(lambda: r.llen("fo") == 2 * 100, timeout=60)
    # A failover loses no acknowledged write: every job ran once, in order.
    check_runs(runs(r, "fo"), expected)
    # Now the master of that slot dies; its replica is promoted.
    more = submit_spread(queue, redis_server.url, "fo2", resources=10, per_resource=3)
    wait_until(lambda: r.llen("fo2") >= 10, timeout=30)
    killed_at = time.monotonic()
    redis_cluster.kill_master(redis_cluster.node_for_slot(slot)[1])
    job = queue.submit_job("cluster.log", resource_id="after-kill", params={
        "url": redis_server.url, "log": "fo3", "name": "after", "resource": "after-kill"})
    assert queue.wait(job, timeout=30).state == "succeeded"
    assert time.monotonic() - killed_at < 30
    # Jobs of the killed master may have run twice (a lease lost with it),
    # never two at once per resource, never out of order.
    wait_until(lambda: {n for _k, _r, n, _p in runs(r, "fo2")} >=
               {n for names in more.values() for n in names}, timeout=60)
    check_runs(runs(r, "fo2"), more, once=False)


def test_a_reader_that_came_first_follows_the_number_the_workers_stored(make_queue,
                                                                        redis_server, r):
    reader = make_queue(LOG_TASK)  # partitions=None, on a queue nobody used yet
    assert reader.stats()["pending"] == 0 and len(reader.brokers) == 1
    workers = make_queue(LOG_TASK, partitions=3, worker_count=4)
    workers.start()  # stores 3
    job = reader.submit_job("cluster.log", resource_id="x", params={
        "url": redis_server.url, "log": "reader", "name": "n", "resource": "x"})
    assert len(reader.brokers) == 3
    assert reader.wait(job, timeout=20).state == "succeeded"


def test_more_partitions_than_workers_run_every_job_once(make_queue, redis_server, r):
    queue = make_queue(LOG_TASK, partitions=6, worker_count=2)
    expected = submit_spread(queue, redis_server.url, "few", resources=20, per_resource=3)
    queue.start()
    wait_until(lambda: r.llen("few") == 2 * 60, timeout=60)
    check_runs(runs(r, "few"), expected)
    began = time.monotonic()
    queue.shutdown(timeout=5)
    assert time.monotonic() - began < 10  # no fetcher stuck holding a leased job
