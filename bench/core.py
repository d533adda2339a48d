"""Where a drained job's time goes: the in-process worker drains N queued
jobs, and this divides by N the CPU time of this process (Python, greenq and
redis-py), Redis' CPU time and per-command time (INFO cpu / commandstats),
the client round trips (by their first command) and the Redis commands.

    python -m bench.core [--jobs 20000] [--workers 100] [--task noop|job]
                         [--sleep S] [--redis-url URL] [--json FILE] [--quick]

--task noop: jobs that do nothing, so the figures are greenq's own cost;
--task job: the benchmark's job, which records itself in Redis (one
pipeline, as in W2), after sleeping S seconds with --sleep (as in W3).
Completion is counted by job_success events, so the
measurement adds no Redis traffic. Starts a throwaway redis-server unless
--redis-url is given (then other clients of that Redis add to its figures).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent.event  # noqa: E402

from bench import traffic  # noqa: E402
from bench.peers.common import job_params  # noqa: E402
from bench.redis_server import ThrowawayRedis  # noqa: E402
from bench.workloads import Context  # noqa: E402

log = logging.getLogger("bench.core")


def drain_costs(ctx: Context, jobs: int, workers: int, task: str, sleep: float = 0.0) -> dict:
    namespace = ctx.namespace("core", 0)
    params = None
    if task == "job":
        params = job_params(f"{namespace}:rec", **({"s": sleep} if sleep else {}))
    q = ctx.queue(namespace, 0, workers)
    ctx.submit_bulk(q, [{"task_id": f"bench.{task}", "params": params}] * jobs)
    done = gevent.event.Event()
    succeeded = 0

    def on_success(job):
        nonlocal succeeded
        succeeded += 1
        if succeeded == jobs:
            done.set()

    q.on("job_success", on_success)
    trips = traffic.RoundTrips({script.sha: name for name, script in q.broker.scripts.items()})
    stats_before = traffic.command_stats(ctx.admin)
    redis_cpu_before = traffic.redis_cpu_seconds(ctx.admin)
    cpu_before = traffic.cpu_seconds()
    try:
        with trips.counting():
            began = time.perf_counter()
            q.start()
            finished = done.wait(timeout=120 + jobs / 100)
            wall = time.perf_counter() - began
        cpu = traffic.cpu_seconds() - cpu_before
        redis_cpu = traffic.redis_cpu_seconds(ctx.admin) - redis_cpu_before
        commands = traffic.stats_delta(stats_before, traffic.command_stats(ctx.admin))
    finally:
        q.shutdown()
        ctx.clean()
    if not finished:
        raise RuntimeError(f"{succeeded} of {jobs} jobs succeeded in {wall:.0f} s")
    per_job_us = 1e6 / jobs
    return {
        "jobs": jobs, "workers": workers, "task": task, "sleep": sleep,
        "jobs_per_s": jobs / wall,
        "wall_us_per_job": wall * per_job_us,
        "python_cpu_us_per_job": cpu * per_job_us,
        "redis_cpu_us_per_job": redis_cpu * per_job_us,
        "round_trips_per_job": trips.count / jobs,
        "commands_per_job": sum(calls for calls, _ in commands.values()) / jobs,
        "round_trips_by_first_command": {name: count / jobs for name, count in trips.by_first.most_common()},
        "redis_us_per_job_by_command": {name: usec / jobs for name, (_, usec) in commands.items()},
        "calls_per_job_by_command": {name: calls / jobs for name, (calls, _) in commands.items()},
    }


def table(costs: dict) -> str:
    sleeping = f" sleeping {costs['sleep']} s" if costs["sleep"] else ""
    lines = [f"in-process drain of {costs['jobs']:,} bench.{costs['task']} jobs{sleeping}, "
             f"worker_count={costs['workers']}: {costs['jobs_per_s']:,.0f} jobs/s", ""]
    for name in ("wall_us_per_job", "python_cpu_us_per_job", "redis_cpu_us_per_job",
                 "round_trips_per_job", "commands_per_job"):
        lines.append(f"  {name:<24} {costs[name]:10.2f}")
    lines += ["", "  round trips per job, by first command:"]
    lines += [f"    {name:<22} {value:8.3f}" for name, value in costs["round_trips_by_first_command"].items()]
    lines += ["", "  Redis per job, by command:       calls      usec"]
    for name, usec in sorted(costs["redis_us_per_job_by_command"].items(), key=lambda item: -item[1]):
        lines.append(f"    {name:<28} {costs['calls_per_job_by_command'][name]:7.3f}  {usec:8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.core", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=None, help="default 20000; 500 with --quick")
    parser.add_argument("--workers", type=int, default=100, help="worker_count (greenlets)")
    parser.add_argument("--task", choices=("noop", "job"), default="noop")
    parser.add_argument("--sleep", type=float, default=0.0,
                        help="with --task job: seconds each job sleeps first (W3: 0.1)")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--json", metavar="FILE", default=None)
    parser.add_argument("--quick", action="store_true", help="few jobs, for CI")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--job-log", action="store_true",
                        help="keep greenq's per-job lines (greenq.jobs, INFO) on")
    args = parser.parse_args(argv)
    jobs = args.jobs if args.jobs is not None else (500 if args.quick else 20000)
    if jobs < 1 or args.workers < 1:
        parser.error("--jobs and --workers must be >= 1")
    if args.sleep and args.task != "job":
        parser.error("--sleep needs --task job")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.job_log:
        logging.getLogger("greenq.jobs").setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        url = args.redis_url or stack.enter_context(ThrowawayRedis()).url
        ctx = Context(url, args.quick)
        stack.callback(ctx.close)
        costs = drain_costs(ctx, jobs, args.workers, args.task, args.sleep)
    print(table(costs))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(costs, out, indent=2)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
