"""W8 and W9: jobs that wait for a time. greenq's own workloads, on the
worker processes W4 uses (GreenQueue(child_process_count=2), idle when the
measurement begins).

Every figure is read on Redis' clock only: a job's due time is computed from
Redis TIME at submit (its run_at is that epoch time), and its start is the
"started" field fetch.lua stamps from Redis TIME when it leases the job. So
no figure mixes this machine's clock with Redis'. Both are whole
milliseconds, so a lateness under 1 ms reads 0.

W8: lateness of delayed jobs (start minus due) with due times spread evenly
over a span, on idle workers: the promotion in the fetch, the wake-up of an
idle worker at the due time (wake.lua) and the lease.

W9: a task with rate_limit="1000/s", every job submitted at once: the
throughput over the steady part (after the first period's burst, which the
empty window allows) against the limit, and the most starts in any window
of one period (half-open, [t, t + period)), which must never exceed it.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from bench.peers import common
from bench.peers.common import BULK_CHUNK, PROCESSES, job_params
from bench.workloads import IDLE_SETTLE, Context, timeout_for, warm_up

log = logging.getLogger("bench.timing")

W9_LIMIT = 1000          # bench.limited's rate_limit, starts per period
W9_PERIOD_MS = 1000


@dataclasses.dataclass(frozen=True)
class TimeCounts:
    delayed: int          # W8 jobs
    spread_seconds: float  # W8: their due times spread evenly over this span
    lead_seconds: float    # W8: from the submit to the first due time
    limited: int          # W9 jobs


FULL = TimeCounts(delayed=10_000, spread_seconds=10.0, lead_seconds=2.0, limited=10_000)
QUICK = TimeCounts(delayed=200, spread_seconds=2.0, lead_seconds=1.0, limited=1_500)


def counts(ctx: Context) -> TimeCounts:
    return QUICK if ctx.quick else FULL


def redis_now_ms(ctx: Context) -> int:
    seconds, micros = ctx.admin.time()
    return seconds * 1000 + micros // 1000


def started_ms(ctx: Context, q, ids: list[str]) -> list[int]:
    """Each job's "started" (Redis ms), in the order of `ids`; the records
    are kept for the default result_ttl."""
    pipe = ctx.admin.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(q.keys.job(job_id), "started")
    values = pipe.execute()
    missing = sum(1 for value in values if value is None)
    if missing:
        raise RuntimeError(f"{missing} of {len(ids)} job records have no start time")
    return [int(value) for value in values]


def idle_queue(ctx: Context, namespace: str):
    """W4's workers, started, warmed up and idle."""
    q = ctx.queue(namespace, PROCESSES, ctx.counts.drain_concurrency)
    q.start()
    try:
        warm_up(ctx, q, f"{namespace}:rec:warm")
        time.sleep(IDLE_SETTLE)
    except BaseException:
        q.shutdown()
        raise
    return q


# -- W8: delayed jobs' lateness ----------------------------------------------------


def w8(ctx: Context, run: int) -> dict:
    c = counts(ctx)
    namespace = ctx.namespace("W8", run)
    key = f"{namespace}:rec"
    q = idle_queue(ctx, namespace)
    try:
        first = redis_now_ms(ctx) + round(c.lead_seconds * 1000)
        step = c.spread_seconds * 1000 / c.delayed
        due = [first + round(i * step) for i in range(c.delayed)]
        ids: list[str] = []
        for start in range(0, c.delayed, BULK_CHUNK):
            ids += q.submit_jobs([{"task_id": "bench.job", "params": job_params(key),
                                   "run_at": at / 1000} for at in due[start:start + BULK_CHUNK]])
        if redis_now_ms(ctx) >= first:
            raise RuntimeError(f"the submit took longer than the {c.lead_seconds:g} s lead: "
                               "the first jobs were due before they were all submitted")
        common.wait_done(ctx.admin, key, c.delayed, timeout_for(c.delayed) + c.spread_seconds)
        starts = started_ms(ctx, q, ids)
    finally:
        q.shutdown()
    lateness = [start - at for start, at in zip(starts, due)]
    early = sum(1 for late in lateness if late < 0)
    if early:
        raise RuntimeError(f"{early} delayed jobs started before their due time")
    return {"W8_lateness_p50_ms": float(common.percentile(lateness, 0.50)),
            "W8_lateness_p99_ms": float(common.percentile(lateness, 0.99)),
            "W8_lateness_max_ms": float(max(lateness))}


# -- W9: a rate-limited task -----------------------------------------------------------


def most_in_window(starts: list[int], period_ms: int) -> int:
    """The most starts in any half-open window [t, t + period_ms) (sorted ms)."""
    most, low = 0, 0
    for high, at in enumerate(starts):
        while at - starts[low] >= period_ms:
            low += 1
        most = max(most, high - low + 1)
    return most


def steady_rate(starts: list[int], limit: int) -> float:
    """Starts per second after the first `limit` (the burst an empty window
    lets through at once): from the limit-th start to the last."""
    steady = starts[limit:]
    if len(steady) < 2 or steady[-1] == steady[0]:
        raise RuntimeError(f"too few jobs ({len(starts)}) past the first {limit} to time")
    return (len(steady) - 1) * 1000 / (steady[-1] - steady[0])


def w9(ctx: Context, run: int) -> dict:
    c = counts(ctx)
    namespace = ctx.namespace("W9", run)
    key = f"{namespace}:rec"
    q = idle_queue(ctx, namespace)
    try:
        ids: list[str] = []
        jobs = [{"task_id": "bench.limited", "params": job_params(key)}] * c.limited
        for start in range(0, c.limited, BULK_CHUNK):
            ids += q.submit_jobs(jobs[start:start + BULK_CHUNK])
        common.wait_done(ctx.admin, key, c.limited,
                         timeout_for(c.limited) + c.limited / W9_LIMIT)
        starts = sorted(started_ms(ctx, q, ids))
    finally:
        q.shutdown()
    rate = steady_rate(starts, W9_LIMIT) * W9_PERIOD_MS / 1000
    most = most_in_window(starts, W9_PERIOD_MS)
    if most > W9_LIMIT:
        log.error("W9: %d starts in one %d ms window, over the limit of %d",
                  most, W9_PERIOD_MS, W9_LIMIT)
    return {"W9_rate_limited_jobs_per_s": rate, "W9_share_of_limit": rate / W9_LIMIT,
            "W9_most_starts_in_a_period": float(most),
            "W9_starts_over_limit": float(max(0, most - W9_LIMIT))}
