"""`greenq demo`: 10,000 I/O-bound jobs over 100 resources through worker
children, with a live progress bar, then a summary that proves the lock."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import click
import gevent
import redis
from tqdm import tqdm

from . import demo_tasks
from .queue import GreenQueue, new_job_id

log = logging.getLogger(__name__)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


class ThrowawayRedis:
    """A redis-server on a free port in a temp dir, gone when the demo ends."""

    def __init__(self, install: bool) -> None:
        if shutil.which("redis-server") is None:
            if not (install and os.geteuid() == 0 and shutil.which("apt-get")):
                raise click.ClickException(
                    "no Redis answers and redis-server is not installed: "
                    "install it (apt-get install -y redis-server) or pass --redis-url")
            click.echo("installing redis-server with apt-get ...", err=True)
            subprocess.run("apt-get update -qq && apt-get install -y -qq redis-server",
                           shell=True, check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="greenq-demo-")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir], stdout=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while not _answers(self.url):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise click.ClickException("the throwaway redis-server did not start")
            time.sleep(0.05)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def count(number: int, singular: str, plural: str | None = None) -> str:
    """"1 job", "2 jobs", "1 child", "2 children"."""
    return f"{number:,} {singular if number == 1 else plural or singular + 's'}"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis SCAN MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def run_demo(jobs: int, resources: int, children: int, workers: int, install_redis: bool,
             redis_url: str, queue_id: str, namespace: str | None = None) -> int:
    """Run the demo on queue `queue_id` of `namespace` (None: a fresh random
    namespace). It deletes its keys at the end, so it refuses a queue that
    already holds any: they could be someone's jobs."""
    server = None
    if not _answers(redis_url):
        click.echo(f"no Redis answers at {redis_url.split('@')[-1]}; starting a throwaway one", err=True)
        server = ThrowawayRedis(install_redis)
        redis_url = server.url
    if namespace is None:
        namespace = "greenq-demo-" + new_job_id()[:8].replace("-", "x").replace("_", "y")
    # The tasks' own counters share the queue's prefix (and Cluster slot), so
    # one pattern finds every key the demo wrote.
    queue_prefix = f"{namespace}:{{{queue_id}}}:"
    prefix = queue_prefix + "demo:"
    pattern = _glob_escape(queue_prefix) + "*"
    with redis.Redis.from_url(redis_url) as check:
        taken = next(check.scan_iter(pattern, count=1000), None) is not None
    if taken:  # (a throwaway server is empty)
        raise ValueError(f"queue {queue_id!r} of namespace {namespace!r} already holds keys; the "
                         "demo deletes its keys when it ends, so give it a namespace of its own")
    os.environ[demo_tasks.URL_ENV], os.environ[demo_tasks.PREFIX_ENV] = redis_url, prefix
    queue = GreenQueue(redis_url=redis_url, namespace=namespace, queue_id=queue_id,
                       child_process_count=children, worker_count=workers)
    queue.register_task("greenq.demo_tasks")
    finished = {"ok": 0, "failed": 0}
    queue.on("job_success", lambda job: finished.__setitem__("ok", finished["ok"] + 1))
    queue.on("job_fail", lambda job: finished.__setitem__("failed", finished["failed"] + 1)
             or log.warning("job %s failed: %s", job.id, job.error))
    # Ctrl-C is raised here, in the main greenlet, where the finally below
    # cleans up; Python's own handler may raise it in gevent's hub, which
    # prints it before passing it on.
    main = gevent.getcurrent()
    interrupt = gevent.signal_handler(
        signal.SIGINT, lambda: gevent.get_hub().loop.run_callback(main.throw, KeyboardInterrupt))
    try:
        queue.start()
        started = time.monotonic()
        with tqdm(total=jobs, unit="job", dynamic_ncols=True, desc="greenq demo") as bar:
            for first in range(0, jobs, 1000):
                queue.submit_jobs([{"task_id": "demo.fetch", "resource_id": f"r{i % resources}",
                                    "params": {"resource": f"r{i % resources}",
                                               "submitted": time.time()}}
                                   for i in range(first, min(jobs, first + 1000))])
            while True:
                gevent.sleep(0.25)
                stats = queue.stats()
                bar.n = finished["ok"] + finished["failed"]
                bar.set_postfix(running=stats["active"], waiting=stats["waiting"],
                                failed=stats["failed"], refresh=False)
                # Redis has the final word: an event can die with a killed child.
                if bar.n >= jobs or not any(stats[k] for k in ("pending", "active", "waiting")):
                    break  # closing the bar draws it, once
                bar.refresh()
        elapsed = time.monotonic() - started
        queue.shutdown()
        check = redis.Redis.from_url(redis_url)
        latencies = [float(x) * 1000 for x in check.lrange(prefix + "latency", 0, -1)]
        overlaps = int(check.get(prefix + "overlaps") or 0)
        click.echo(f"\n{count(jobs, 'job')} over {count(resources, 'resource')}, "
                   f"{count(children, 'child', 'children')} x {count(workers, 'worker')}, "
                   f"in {elapsed:.2f}s: {jobs / elapsed:,.0f} jobs/s")
        click.echo(f"succeeded {finished['ok']:,}, failed {finished['failed']:,}")
        click.echo("submit-to-start ms: " + ", ".join(
            f"p{int(p * 100)} {percentile(latencies, p):.1f}" for p in (0.5, 0.9, 0.99, 1.0)))
        click.echo(f"  (from submit until the job began, waiting behind busy resources included:\n"
                   f"  {'all ' if jobs > 1 else ''}{count(jobs, 'job')} submitted at once, and "
                   f"each resource runs its ~{max(1, round(jobs / resources)):,} one at a time)")
        if overlaps == 0 and len(latencies) == jobs:
            every = f"all {jobs:,} jobs" if jobs > 1 else "the 1 job"
            click.echo(f"resource lock: checked on {every}, no resource ever ran "
                       "two jobs at once")
        else:
            click.echo(f"resource lock VIOLATED: {overlaps} overlapping starts "
                       f"({len(latencies)} of {count(jobs, 'job')} recorded)")
            return 1
        return 0 if finished["failed"] == 0 else 1
    finally:
        interrupt.cancel()
        queue.shutdown(timeout=5)
        try:
            cleanup = redis.Redis.from_url(redis_url)
            keys = list(cleanup.scan_iter(pattern, count=1000))
            for start in range(0, len(keys), 1000):
                cleanup.delete(*keys[start:start + 1000])
        except redis.RedisError:
            pass
        if server is not None:
            server.close()
