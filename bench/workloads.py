"""W1-W4, the workloads greenq shares with its peers (bench/peers), with the
same counts, the same job and the same clock (bench/peers/common.py), and
W7, greenq's own: how soon wait() wakes after a job ends.

Each measurement has its own namespace; the keys of a run are deleted after
it. Worker processes are GreenQueue(child_process_count=2) started from this
process, which is then their master (and otherwise only polls a counter).
"""

from __future__ import annotations

import logging
import os
import time
import uuid

import gevent
import redis

import greenq
from bench import ceiling
from bench.peers import common
from bench.peers.common import PROCESSES, BULK_CHUNK, job_params

log = logging.getLogger("bench.workloads")

TASKS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks.py")
INPROCESS_WORKERS = 100   # W2_drain_inprocess: greenlets in this process
IDLE_SETTLE = 0.5         # W4: seconds for idle workers to reach their blocking wait
WARM_UP_TIMEOUT = 120.0
W7_JOBS = {False: 1000, True: 50}  # W7 jobs waited on at once, full and --quick
W7_LEAD = 1.0             # W7: seconds from the submit to the first finish (waiters get ready)


def timeout_for(jobs: int) -> float:
    """Bound on one drain: catches a hang, never a slow machine."""
    return 120.0 + jobs * 0.05


class Context:
    """The Redis, the counts and the key names of one `python -m bench`."""

    def __init__(self, redis_url: str, quick: bool) -> None:
        self.redis_url = redis_url
        self.quick = quick
        self.counts = common.QUICK if quick else common.FULL
        self.admin = redis.Redis.from_url(redis_url)
        # 6 characters, like greenq's default namespace "greenq", so W6's
        # Redis bytes per job are those of a real deployment's key names.
        self.prefix = "b" + uuid.uuid4().hex[:5]
        os.environ["BENCH_PEER_REDIS_URL"] = redis_url  # the jobs' record client; children inherit it

    def namespace(self, workload: str, run: int) -> str:
        return f"{self.prefix}-{workload}-{run}"

    def queue(self, namespace: str, children: int = 0, workers: int = 100,
              **settings) -> "greenq.GreenQueue":
        """`settings`: more GreenQueue arguments (result_ttl, ...); greenq's defaults otherwise."""
        q = greenq.GreenQueue(redis_url=self.redis_url, namespace=namespace,
                              child_process_count=children, worker_count=workers, **settings)
        q.register_task(TASKS_FILE)
        q.on("job_fail", lambda job: log.error("job %s failed: %s", job.id, job.error))
        return q

    def submit_bulk(self, q: "greenq.GreenQueue", jobs: list[dict]) -> None:
        for start in range(0, len(jobs), BULK_CHUNK):
            q.submit_jobs(jobs[start:start + BULK_CHUNK])

    def clean(self) -> None:
        """Delete every key of this benchmark (and nothing else): its
        namespaces are the prefix itself and prefix-<workload>-<run>."""
        for pattern in (f"{self.prefix}:*", f"{self.prefix}-*"):
            common.delete_matching(self.admin, pattern)

    def close(self) -> None:
        self.clean()
        self.admin.close()


def noop_jobs(key: str, n: int, **extra) -> list[dict]:
    return [{"task_id": "bench.job", "params": job_params(key, **extra)}] * n


# -- W1: submit ----------------------------------------------------------------


def w1(ctx: Context, run: int) -> dict:
    namespace = ctx.namespace("W1", run)
    key = f"{namespace}:rec"
    n = ctx.counts.submit
    q = ctx.queue(namespace)
    try:
        q.submit_job("bench.job", params=job_params(key))  # connect outside the timing
        began = time.perf_counter()
        for _ in range(n):
            q.submit_job("bench.job", params=job_params(key))
        single = n / (time.perf_counter() - began)
        ctx.clean()
        q.submit_jobs(noop_jobs(key, 1))
        began = time.perf_counter()
        ctx.submit_bulk(q, noop_jobs(key, n))
        bulk = n / (time.perf_counter() - began)
    finally:
        q.shutdown()
    return {"W1_submit_single": single, "W1_submit_bulk": bulk}


# -- W2, W3: drain -------------------------------------------------------------


def drained(ctx: Context, namespace: str, jobs: list[dict], children: int, workers: int,
            **settings) -> float:
    """Queue every job, then start the workers: seconds from the first job's
    start to the last job's finish."""
    key = jobs[0]["params"]["k"]
    q = ctx.queue(namespace, children, workers, **settings)
    ctx.submit_bulk(q, jobs)
    q.start()
    try:
        common.wait_done(ctx.admin, key, len(jobs), timeout_for(len(jobs)))
    finally:
        q.shutdown()
    return common.span_seconds(ctx.admin, key)


def w2(ctx: Context, run: int) -> dict:
    n = ctx.counts.drain
    namespace = ctx.namespace("W2", run)
    seconds = drained(ctx, namespace, noop_jobs(f"{namespace}:rec", n),
                      PROCESSES, ctx.counts.drain_concurrency)
    ctx.clean()
    # What keeping each ended record for the default result_ttl costs.
    namespace = ctx.namespace("W2ttl0", run)
    unkept = drained(ctx, namespace, noop_jobs(f"{namespace}:rec", n),
                     PROCESSES, ctx.counts.drain_concurrency, result_ttl=0)
    ctx.clean()
    namespace = ctx.namespace("W2in", run)
    inprocess = drained(ctx, namespace, noop_jobs(f"{namespace}:rec", n), 0, INPROCESS_WORKERS)
    ctx.clean()
    key = f"{ctx.namespace('W2ceil', run)}:rec"
    bare = ceiling.drain_without_queue(ctx.admin, key, n, ctx.counts.drain_concurrency,
                                       timeout_for(n))
    return {"W2_drain": n / seconds, "W2_drain_result_ttl_0": n / unkept,
            "W2_drain_inprocess": n / inprocess,
            "W2_ceiling_no_queue": n / bare, "W2_share_of_ceiling": seconds and bare / seconds}


def w3(ctx: Context, run: int) -> dict:
    c = ctx.counts
    namespace = ctx.namespace("W3", run)
    jobs = noop_jobs(f"{namespace}:rec", c.sleepers, s=c.sleep_seconds)
    seconds = drained(ctx, namespace, jobs, PROCESSES, c.sleep_concurrency)
    ctx.clean()
    key = f"{ctx.namespace('W3ceil', run)}:rec"
    bare = ceiling.drain_without_queue(ctx.admin, key, c.sleepers, c.sleep_concurrency,
                                       timeout_for(c.sleepers), sleep=c.sleep_seconds)
    return {"W3_efficiency": c.ideal_sleep_wall() / seconds,
            "W3_ceiling_no_queue": c.ideal_sleep_wall() / bare}


# -- W4: latency ---------------------------------------------------------------


def warm_up(ctx: Context, q: "greenq.GreenQueue", key: str) -> None:
    """Until every worker process has run a job (so all are up and idle)."""
    deadline = time.monotonic() + WARM_UP_TIMEOUT
    sent = 0
    while ctx.admin.scard(f"{key}:pids") < PROCESSES:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every worker child ran a job within {WARM_UP_TIMEOUT:.0f} s")
        q.submit_jobs(noop_jobs(key, 10, w=1))
        sent += 10
        time.sleep(0.2)
    common.wait_done(ctx.admin, key, sent, timeout_for(sent))


def w4(ctx: Context, run: int) -> dict:
    figures = submit_to_start(ctx, ctx.namespace("W4", run))
    unkept = submit_to_start(ctx, ctx.namespace("W4ttl0", run), result_ttl=0)
    figures.update({f"{name}_result_ttl_0": value for name, value in unkept.items()})
    return figures


def submit_to_start(ctx: Context, namespace: str, **settings) -> dict:
    """W4's latencies on a queue with GreenQueue `settings`."""
    c = ctx.counts
    key = f"{namespace}:rec"
    q = ctx.queue(namespace, PROCESSES, c.drain_concurrency, **settings)
    q.start()
    try:
        warm_up(ctx, q, f"{key}:warm")
        time.sleep(IDLE_SETTLE)
        for params in common.paced([job_params(key)] * c.latency, c.latency_rate):
            q.submit_job("bench.job", params=params)
        common.wait_done(ctx.admin, key, c.latency, timeout_for(c.latency))
    finally:
        q.shutdown()
    latencies = common.latencies_ms(ctx.admin, key)
    return {"W4_latency_p50_ms": common.percentile(latencies, 0.50),
            "W4_latency_p99_ms": common.percentile(latencies, 0.99)}


# -- W7: wait() wake-up --------------------------------------------------------


def marked(ctx: Context, q: "greenq.GreenQueue", ids: list[str]) -> int:
    """How many of the jobs carry wait()'s mark (watch.lua ran for them)."""
    pipe = ctx.admin.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(q.keys.job(job_id), "watch")
    return sum(1 for value in pipe.execute() if value)


def w7(ctx: Context, run: int) -> dict:
    """Every job waited on at once by a greenlet of this process (one
    listener, one pub/sub connection); the jobs run in the worker children,
    as in W4, and end paced at W4's rate. Each job returns the wall-clock
    time it finished (bench.stamp); its waiter stamps the time wait()
    returned. The figure is the difference: the finish script, the publish,
    the listener's read of the record and the waiter's wake-up."""
    c = ctx.counts
    n = W7_JOBS[ctx.quick]
    namespace = ctx.namespace("W7", run)
    q = ctx.queue(namespace, PROCESSES, c.drain_concurrency)
    q.start()
    woken: dict[str, tuple[float, "greenq.Job"]] = {}

    def waiter(job_id: str) -> None:
        job = q.wait(job_id, timeout=timeout_for(n))
        woken[job_id] = (time.time(), job)

    try:
        warm_up(ctx, q, f"{namespace}:rec:warm")
        time.sleep(IDLE_SETTLE)
        first = time.time() + W7_LEAD + n / 1000
        ids = q.submit_jobs([{"task_id": "bench.stamp",
                              "params": {"at": first + i / c.latency_rate}} for i in range(n)])
        waiters = [gevent.spawn(waiter, job_id) for job_id in ids]
        # Every waiter must be in place (past its check) before the first
        # finish, or its wait() returns the ended record and times nothing.
        while marked(ctx, q, ids) < n:
            if time.time() > first:
                raise RuntimeError(f"only {marked(ctx, q, ids)} of {n} waiters were in place "
                                   f"{W7_LEAD:g} s after the submit")
            gevent.sleep(0.05)
        gevent.joinall(waiters, timeout=timeout_for(n), raise_error=True)
    finally:
        q.shutdown()
    if len(woken) < n:
        raise RuntimeError(f"{n - len(woken)} of {n} waiters did not wake")
    wrong = [job.state for _, job in woken.values() if job.state != "succeeded"]
    if wrong:
        raise RuntimeError(f"{len(wrong)} waited jobs did not succeed: {sorted(set(wrong))}")
    latencies = [(woke - job.result) * 1000 for woke, job in woken.values()]
    return {"W7_wake_p50_ms": common.percentile(latencies, 0.50),
            "W7_wake_p99_ms": common.percentile(latencies, 0.99)}
