"""What counting metrics in Redis costs: W2's drain (no-op jobs, 2 worker
processes x 50) on a throwaway redis-server, with the calls and Redis time
per job of the commands greenq's clients send (EVALSHA, BLMOVE, from INFO
commandstats; the commands scripts run count inside EVALSHA's usec).

    python -m bench.metrics_cost [--jobs 20000] [--json FILE]

Run it in the tree before a change and after it (PYTHONPATH=<tree>),
alternating, and compare: the calls per job show whether a round trip per
job was added; the usec per job what the scripts' extra work costs.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import redis  # noqa: E402

import greenq  # noqa: E402
from bench.peers import common  # noqa: E402
from bench.redis_server import ThrowawayRedis  # noqa: E402
from bench.workloads import TASKS_FILE, noop_jobs, timeout_for  # noqa: E402

CLIENT_COMMANDS = ("cmdstat_evalsha", "cmdstat_blmove")


def client_commands(client: redis.Redis) -> tuple[int, int]:
    """(calls, usec) of greenq's client commands since the last reset."""
    stats = client.info("commandstats")
    return (sum(int(stats[name]["calls"]) for name in CLIENT_COMMANDS if name in stats),
            sum(int(stats[name]["usec"]) for name in CLIENT_COMMANDS if name in stats))


def measure(jobs: int) -> dict:
    with ThrowawayRedis() as server:
        os.environ["BENCH_PEER_REDIS_URL"] = server.url  # the jobs' own record client
        admin = redis.Redis.from_url(server.url)
        key = "bench-metrics:rec"
        q = greenq.GreenQueue(redis_url=server.url, namespace="bench-metrics",
                              child_process_count=2, worker_count=50)
        q.register_task(TASKS_FILE)
        work = noop_jobs(key, jobs)
        for start in range(0, jobs, 1000):
            q.submit_jobs(work[start:start + 1000])
        admin.config_resetstat()
        q.start()
        try:
            common.wait_done(admin, key, jobs, timeout_for(jobs))
        finally:
            q.shutdown()
        calls, usec = client_commands(admin)
        return {"jobs_per_s": jobs / common.span_seconds(admin, key),
                "calls_per_job": calls / jobs, "redis_usec_per_job": usec / jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    figures = measure(args.jobs)
    json.dump(figures, sys.stdout)
    sys.stdout.write("\n")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file)


if __name__ == "__main__":
    main()
