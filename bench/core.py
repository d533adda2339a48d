"""Core benchmark of the in-process worker: submit rate, drain rate,
submit-to-start latency and Redis traffic per job.

    python -m bench.core [--jobs N] [--redis-url URL] [--json FILE] [--quick]

Starts a throwaway redis-server unless --redis-url is given (then other
clients of that Redis add to the command counts). Each measurement uses its
own namespace and deletes its keys afterwards. Prints a table on stdout;
diagnostics go to the log (stderr). Figures are measurements, not checks.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import redis  # noqa: E402
import redis.connection  # noqa: E402

import greenq  # noqa: E402
from bench.redis_server import ThrowawayRedis  # noqa: E402

log = logging.getLogger("bench.core")

WORKER_COUNT = 100
BULK_CHUNK = 1000
LATENCY_RATE = 200.0  # jobs per second, submitted one by one
IDLE_SETTLE = 0.3     # seconds for the workers to reach their blocking wait

_started_after: list[float] = []  # seconds from submit to start, one per stamp job


@greenq.task("bench.noop")
def noop(params):
    return None


@greenq.task("bench.stamp")
def stamp(params):
    _started_after.append(time.time() - params["sent"])


# -- Redis traffic ---------------------------------------------------------


class RoundTrips:
    """Counts client-side round trips: redis-py sends one packed buffer per
    command or per pipeline, so each send_packed_command is one round trip."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def counting(self):
        cls = redis.connection.AbstractConnection
        original = cls.send_packed_command

        def send_packed_command(conn, *args, **kwargs):
            self.count += 1
            return original(conn, *args, **kwargs)

        cls.send_packed_command = send_packed_command
        try:
            yield self
        finally:
            cls.send_packed_command = original


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the server started (INFO commandstats; Redis 7
    counts the commands a Lua script runs as well as EVALSHA itself)."""
    return {name.removeprefix("cmdstat_"): int(stat["calls"])
            for name, stat in client.info("commandstats").items()}


def calls_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {name: calls - before.get(name, 0) for name, calls in after.items()}
    delta.pop("info", None)  # our own measuring
    return {name: calls for name, calls in sorted(delta.items()) if calls}


# -- measurements ------------------------------------------------------------


class Bench:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.run_id = uuid.uuid4().hex[:8]
        self.admin = redis.Redis.from_url(redis_url)

    def queue(self, what: str) -> greenq.GreenQueue:
        q = greenq.GreenQueue(redis_url=self.redis_url, namespace=f"bench-{self.run_id}-{what}",
                              child_process_count=0, worker_count=WORKER_COUNT)
        q.register_task(sys.modules[__name__])
        q.on("job_fail", lambda job: log.warning("job %s failed: %s", job.id, job.error))
        return q

    def clean(self, q: greenq.GreenQueue) -> None:
        batch = []
        for key in self.admin.scan_iter(match=f"{q.namespace}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self.admin.unlink(*batch)
                batch.clear()
        if batch:
            self.admin.unlink(*batch)

    def submit_one_by_one(self, n: int) -> float:
        q = self.queue("submit-one")
        try:
            q.submit_job("bench.noop")  # connect outside the timing
            began = time.perf_counter()
            for _ in range(n):
                q.submit_job("bench.noop")
            return n / (time.perf_counter() - began)
        finally:
            q.shutdown()
            self.clean(q)

    def submit_bulk(self, n: int) -> float:
        q = self.queue("submit-bulk")
        try:
            q.submit_job("bench.noop")
            began = time.perf_counter()
            for start in range(0, n, BULK_CHUNK):
                q.submit_jobs([{"task_id": "bench.noop"}] * min(BULK_CHUNK, n - start))
            return n / (time.perf_counter() - began)
        finally:
            q.shutdown()
            self.clean(q)

    def drain(self, n: int) -> dict:
        """n queued no-op jobs, from start() to the last job_success event."""
        q = self.queue("drain")
        for start in range(0, n, BULK_CHUNK):
            q.submit_jobs([{"task_id": "bench.noop"}] * min(BULK_CHUNK, n - start))
        done = gevent.event.Event()
        succeeded = 0

        def on_success(job):
            nonlocal succeeded
            succeeded += 1
            if succeeded == n:
                done.set()

        q.on("job_success", on_success)
        trips = RoundTrips()
        try:
            before = command_calls(self.admin)
            with trips.counting():
                began = time.perf_counter()
                q.start()
                finished = done.wait(timeout=60 + n / 100)
                elapsed = time.perf_counter() - began
            after = command_calls(self.admin)
            if not finished:
                raise RuntimeError(f"drain: {succeeded} of {n} jobs succeeded in {elapsed:.0f}s; "
                                   f"stats {q.stats()}")
            commands = calls_delta(before, after)
            log.info("drain: %d jobs in %.3fs; commands %s", n, elapsed, commands)
            return {"jobs_per_s": n / elapsed, "seconds": elapsed,
                    "commands_per_job": sum(commands.values()) / n,
                    "round_trips_per_job": trips.count / n,
                    "commandstats": commands}
        finally:
            q.shutdown()
            self.clean(q)

    def latency(self, n: int, rate: float) -> dict:
        """n jobs submitted one by one at `rate`/s into idle workers; each
        records time.time() at start against the time.time() in its params."""
        q = self.queue("latency")
        _started_after.clear()
        q.start()
        try:
            gevent.sleep(IDLE_SETTLE)
            began = time.monotonic()
            for i in range(n):
                wait = began + i / rate - time.monotonic()
                if wait > 0:
                    gevent.sleep(wait)
                q.submit_job("bench.stamp", params={"sent": time.time()})
            deadline = time.monotonic() + 30
            while len(_started_after) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"latency: {len(_started_after)} of {n} jobs started; "
                                       f"stats {q.stats()}")
                gevent.sleep(0.01)
            samples = sorted(seconds * 1000 for seconds in _started_after)
            return {"p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99),
                    "max_ms": samples[-1], "samples": len(samples)}
        finally:
            q.shutdown()
            self.clean(q)

    def close(self) -> None:
        self.admin.close()


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


# -- report ----------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(admin: redis.Redis) -> dict:
    server = admin.info("server")
    return {
        "machine": {"platform": platform.platform(), "arch": platform.machine(),
                    "cpu": _cpu_model(), "cpu_count": os.cpu_count()},
        "python": {"implementation": platform.python_implementation(),
                   "version": platform.python_version()},
        "redis": {"version": server.get("redis_version"), "mode": server.get("redis_mode")},
        "libraries": {name: _version(name)
                      for name in ("greenq", "gevent", "greenlet", "redis", "hiredis", "msgpack")},
    }


def table(report: dict) -> str:
    r, c, env = report["results"], report["config"], report["environment"]
    rows = [
        ("submit_job, one by one", f"{r['submit_job_jobs_per_s']:,.0f} jobs/s"),
        (f"submit_jobs, bulk ({BULK_CHUNK:,}/call)", f"{r['submit_jobs_jobs_per_s']:,.0f} jobs/s"),
        ("drain, no-op jobs", f"{r['drain_jobs_per_s']:,.0f} jobs/s"),
        ("submit-to-start latency p50", f"{r['latency_p50_ms']:.2f} ms"),
        ("submit-to-start latency p99", f"{r['latency_p99_ms']:.2f} ms"),
        ("Redis round trips per job (drain)", f"{r['redis_round_trips_per_job']:.3f}"),
        ("Redis commands per job (drain, incl. in Lua)", f"{r['redis_commands_per_job']:.3f}"),
    ]
    width = max(len(name) for name, _ in rows)
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items() if v)
    lines = [
        f"greenq bench: in-process worker, worker_count={c['worker_count']}, "
        f"{c['jobs']:,} jobs; latency {c['latency_jobs']:,} jobs at {c['latency_rate']:.0f}/s",
        f"{env['machine']['cpu']} x{env['machine']['cpu_count']}, "
        f"{env['python']['implementation']} {env['python']['version']}, "
        f"Redis {env['redis']['version']}",
        libs,
        "",
    ]
    lines += [f"  {name:<{width}}  {value:>14}" for name, value in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    jobs = args.jobs if args.jobs is not None else (500 if args.quick else 20000)
    latency_jobs = 100 if args.quick else 1000
    with contextlib.ExitStack() as stack:
        url = args.redis_url
        if url is None:
            url = stack.enter_context(ThrowawayRedis()).url
            log.info("throwaway redis-server at %s", url)
        else:
            log.warning("using %s: other clients of this Redis add to the command counts", url)
        bench = Bench(url)
        stack.callback(bench.close)
        log.info("submit_job x %d", jobs)
        submit_one = bench.submit_one_by_one(jobs)
        log.info("submit_jobs x %d", jobs)
        submit_bulk = bench.submit_bulk(jobs)
        log.info("drain of %d jobs", jobs)
        drain = bench.drain(jobs)
        log.info("latency over %d jobs at %.0f/s", latency_jobs, LATENCY_RATE)
        latency = bench.latency(latency_jobs, LATENCY_RATE)
        return {
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "config": {"jobs": jobs, "latency_jobs": latency_jobs, "latency_rate": LATENCY_RATE,
                       "worker_count": WORKER_COUNT, "child_process_count": 0,
                       "bulk_chunk": BULK_CHUNK, "quick": args.quick,
                       "own_redis": args.redis_url is None},
            "environment": environment(bench.admin),
            "results": {
                "submit_job_jobs_per_s": submit_one,
                "submit_jobs_jobs_per_s": submit_bulk,
                "drain_jobs_per_s": drain["jobs_per_s"],
                "drain_seconds": drain["seconds"],
                "latency_p50_ms": latency["p50_ms"],
                "latency_p99_ms": latency["p99_ms"],
                "latency_max_ms": latency["max_ms"],
                "redis_round_trips_per_job": drain["round_trips_per_job"],
                "redis_commands_per_job": drain["commands_per_job"],
            },
            "drain_commandstats": drain["commandstats"],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.core", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=None,
                        help="jobs per submit/drain measurement (default 20000; 500 with --quick)")
    parser.add_argument("--redis-url", default=None,
                        help="use this Redis instead of a throwaway redis-server")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="small counts, for CI")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be >= 1")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run(args)
    print(table(report))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
            out.write("\n")
        log.info("figures written to %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
