"""W5 (resources) and W6 (scale): greenq's own workloads, which its peers
have no equivalent of.

W5 drains jobs spread over many resources, then one hot resource beside free
jobs, on 2 worker children x 50 greenlets, and checks that no resource ever
ran two jobs at once, and that each resource's jobs ran once each, in
submission order.

W6 runs 10,000 sleeping jobs at once in this process and measures, over a
few heartbeat ticks, the client round trips and the Redis time per tick,
then the RSS each running job costs; then the Redis memory of 100,000
queued jobs without params, of as many kept ended records, and of as many
scheduled jobs (submitted with a delay), also as bytes above a queued one.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time

import gevent

from bench import traffic
from bench.peers import common
from bench.peers.common import PROCESSES, job_params
from bench.workloads import Context, drained, timeout_for

log = logging.getLogger("bench.scale")


@dataclasses.dataclass(frozen=True)
class ScaleCounts:
    resources: int        # W5: resources, each with per_resource jobs
    per_resource: int
    hot: int              # W5: jobs on the hot resource, and as many free jobs beside
    running: int          # W6: jobs running at once in one process
    sleep_seconds: float  # W6: how long each of them runs
    ticks: int            # W6: ticks measured while they all run
    queued: int           # W6: jobs queued for the memory figure
    concurrency: int = 50  # W5 greenlets per child


FULL = ScaleCounts(resources=1000, per_resource=20, hot=2000,
                   running=10_000, sleep_seconds=10.0, ticks=4, queued=100_000)
QUICK = ScaleCounts(resources=50, per_resource=20, hot=200,
                    running=500, sleep_seconds=8.0, ticks=2, queued=5_000)


SCHEDULED_DELAY = 3600.0  # W6: seconds a scheduled job waits (none comes due while measured)


def counts(ctx: Context) -> ScaleCounts:
    return QUICK if ctx.quick else FULL


# -- W5: resources -------------------------------------------------------------


def resource_job(key: str, resource: str, index: int) -> dict:
    return {"task_id": "bench.resource_job", "resource_id": resource,
            "params": job_params(key, r=resource, i=index)}


def order_violations(ctx: Context, key: str, expected: dict[str, int]) -> int:
    """Jobs of a resource that ran out of submission order, plus any that ran
    more or fewer times than once."""
    pipe = ctx.admin.pipeline(transaction=False)
    for resource in expected:
        pipe.lrange(f"{key}:res:{resource}:order", 0, -1)
    violations = 0
    for (resource, count), order in zip(expected.items(), pipe.execute()):
        numbers = [int(n) for n in order]
        violations += abs(len(numbers) - count)
        violations += sum(1 for a, b in zip(numbers, numbers[1:]) if b <= a)
    if violations:
        log.error("W5: %d jobs ran out of order, twice or not at all", violations)
    return violations


def overlaps(ctx: Context, key: str) -> int:
    found = int(ctx.admin.get(f"{key}:overlaps") or 0)
    if found:
        log.error("W5: %d jobs started while another job of their resource ran", found)
    return found


def w5(ctx: Context, run: int) -> dict:
    s = counts(ctx)
    namespace = ctx.namespace("W5", run)
    key = f"{namespace}:rec"
    resources = [f"r{number}" for number in range(s.resources)]
    jobs = [resource_job(key, resource, index)
            for index in range(s.per_resource) for resource in resources]
    seconds = drained(ctx, namespace, jobs, PROCESSES, s.concurrency)
    found_overlaps = overlaps(ctx, key)
    disorder = order_violations(ctx, key, dict.fromkeys(resources, s.per_resource))
    ctx.clean()

    namespace = ctx.namespace("W5hot", run)
    key = f"{namespace}:rec"
    jobs = []
    for index in range(s.hot):
        jobs += [resource_job(key, "hot", index), {"task_id": "bench.job", "params": job_params(key)}]
    hot_seconds = drained(ctx, namespace, jobs, PROCESSES, s.concurrency)
    chain = common.span_seconds(ctx.admin, f"{key}:res:hot")
    log.info("W5 hot resource alone: %d jobs in %.3f s, %.0f jobs/s, %.3f ms per hand-off",
             s.hot, chain, s.hot / chain, chain / s.hot * 1000)
    found_overlaps += overlaps(ctx, key)
    disorder += order_violations(ctx, key, {"hot": s.hot})
    return {"W5_resources_jobs_per_s": len(resources) * s.per_resource / seconds,
            "W5_hot_jobs_per_s": len(jobs) / hot_seconds,
            "W5_overlaps": float(found_overlaps), "W5_order_violations": float(disorder)}


# -- W6: scale -----------------------------------------------------------------


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"W6: {what} within {timeout:.0f} s")
        gevent.sleep(0.005)


def running_at_once(ctx: Context, run: int) -> dict:
    s = counts(ctx)
    n = s.running
    namespace = ctx.namespace("W6", run)
    key = f"{namespace}:rec"
    q = ctx.queue(namespace, 0, n)
    ctx.submit_bulk(q, [{"task_id": "bench.sleeper", "params": job_params(key, s=s.sleep_seconds)}] * n)
    gc.collect()
    rss_before = traffic.rss_bytes()
    q.start()
    try:
        worker = q._runner  # in-process: the Worker, whose tick is ours to watch
        committer = worker.committer
        wait_for(lambda: len(worker.running) == n, 120, f"{n} jobs were not all running")
        # Start right after a tick, end right after the last measured one, so
        # the window holds exactly `ticks` ticks.
        ticks_at = committer.round_trips
        wait_for(lambda: committer.round_trips > ticks_at, 10, "no tick")
        before, cpu_before = traffic.command_stats(ctx.admin), traffic.redis_cpu_seconds(ctx.admin)
        # Labelled by first command: the schedule reader's once-a-second
        # TIME + ZRANGE (greenq/scheduler.py) runs beside the tick, not in it.
        trips = traffic.RoundTrips(scripts={})
        ticks_at = committer.round_trips
        with trips.counting():
            wait_for(lambda: committer.round_trips >= ticks_at + s.ticks, 10 * s.ticks,
                     f"{s.ticks} ticks did not come")
            ticks = committer.round_trips - ticks_at
        after, cpu_after = traffic.command_stats(ctx.admin), traffic.redis_cpu_seconds(ctx.admin)
        rss_running = traffic.rss_bytes()
        if len(worker.running) != n or int(ctx.admin.get(f"{key}:done") or 0):
            log.warning("W6: jobs finished during the measured ticks; round trips include finishes")
        delta = traffic.stats_delta(before, after)
        log.info("W6: %d ticks, %d round trips, Redis CPU %.2f ms per tick (INFO cpu), "
                 "commands: %s", ticks, trips.count, (cpu_after - cpu_before) * 1000 / ticks, delta)
        common.wait_done(ctx.admin, key, n, timeout_for(n) + s.sleep_seconds)
    finally:
        q.shutdown()
    return {"W6_round_trips_per_tick": (trips.count - trips.by_first["time"]) / ticks,
            "W6_redis_ms_per_tick": delta.get("evalsha", (0, 0))[1] / 1000 / ticks,
            "W6_rss_bytes_per_running_job": (rss_running - rss_before) / n}


def queued_memory(ctx: Context, **when) -> float:
    """Redis bytes per queued job without params, under a namespace as long
    as the default one. `when`: delay=... for a scheduled job instead."""
    n = counts(ctx).queued
    q = ctx.queue(ctx.prefix)
    try:
        q.submit_job("bench.job", **when)  # the queue's own keys exist before we measure
        before = traffic.redis_used_memory(ctx.admin)
        ctx.submit_bulk(q, [{"task_id": "bench.job", **when}] * n)
        after = traffic.redis_used_memory(ctx.admin)
    finally:
        q.shutdown()
    return (after - before) / n


def kept_memory(ctx: Context) -> float:
    """Redis bytes per ended record kept for the default result_ttl: jobs
    without params whose perform returns None (bench.noop), run to their
    end, against the memory before they were submitted."""
    n = counts(ctx).queued
    q = ctx.queue(ctx.prefix + "k")
    try:
        q.submit_job("bench.noop")
        q.start()
        wait_drained(q)
        before = traffic.redis_used_memory(ctx.admin)
        ctx.submit_bulk(q, [{"task_id": "bench.noop"}] * n)
        wait_drained(q)
        after = traffic.redis_used_memory(ctx.admin)
    finally:
        q.shutdown()
    return (after - before) / n


def wait_drained(q: "greenq.GreenQueue", timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stats = q.stats()
        if stats["pending"] == stats["active"] == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue not drained within {timeout:.0f} s: {stats}")
        time.sleep(0.05)


def w6(ctx: Context, run: int) -> dict:
    figures = running_at_once(ctx, run)
    ctx.clean()
    figures["W6_redis_bytes_per_queued_job"] = queued_memory(ctx)
    ctx.clean()
    figures["W6_redis_bytes_per_kept_record"] = kept_memory(ctx)
    ctx.clean()
    # A job waiting for its time (an hour: none comes due meanwhile), in the
    # delayed set instead of the pending list.
    scheduled = queued_memory(ctx, delay=SCHEDULED_DELAY)
    figures["W6_redis_bytes_per_scheduled_job"] = scheduled
    figures["W6_redis_bytes_scheduled_over_queued"] = (
        scheduled - figures["W6_redis_bytes_per_queued_job"])
    return figures
