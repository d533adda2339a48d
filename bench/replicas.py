"""What replicas=1 costs: W1 (submit, single and bulk) and W2 (drain, two
worker processes) with replicas=1 against replicas=0, on the same master.

    python -m bench.replicas [--rounds 3] [--quick] [--json FILE]

Starts a throwaway master and one throwaway replica of it (local
redis-servers on free ports), then runs both settings once per round,
alternating which goes first, so a machine that slows down or speeds up
during the run weighs on both alike. Prints, per figure, the median and
min-max of each setting, their ratio, and how many WAITs each job cost
(INFO commandstats on the master).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import redis  # noqa: E402

from bench import workloads  # noqa: E402
from bench.peers import common  # noqa: E402
from bench.peers.common import PROCESSES  # noqa: E402
from bench.redis_server import ThrowawayRedis  # noqa: E402

log = logging.getLogger("bench.replicas")

SETTINGS = (0, 1)  # the replicas= values compared
LINK_TIMEOUT = 30.0


class ReplicatedContext(workloads.Context):
    """The workloads' context, with every queue made with `replicas`."""

    replicas = 0

    def queue(self, namespace, children=0, workers=100, **settings):
        return super().queue(namespace, children, workers, replicas=self.replicas, **settings)


def replicate(master: ThrowawayRedis, replica: ThrowawayRedis) -> None:
    """Make `replica` a replica of `master`; return once the link is up."""
    master_client, replica_client = (redis.Redis(port=s.port) for s in (master, replica))
    master_client.config_set("repl-diskless-sync-delay", 0)  # no 5 s wait for more replicas
    replica_client.replicaof("127.0.0.1", master.port)
    deadline = time.monotonic() + LINK_TIMEOUT
    while master_client.info("replication").get("slave0", {}).get("state") != "online" or \
            replica_client.info("replication").get("master_link_status") != "up":
        if time.monotonic() > deadline:
            raise TimeoutError(f"the replica did not sync within {LINK_TIMEOUT:.0f} s")
        time.sleep(0.05)


def wait_calls(client: redis.Redis) -> int:
    return client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)


def measure(ctx: ReplicatedContext, replicas: int, run: int) -> dict[str, float]:
    """W1 and W2 once with `replicas`: jobs/s, and the drain's WAITs per job."""
    ctx.replicas = replicas
    figures: dict[str, float] = {}
    figures.update(workloads.w1(ctx, run))  # one WAIT per submit_job, per submit_jobs call
    ctx.clean()
    n = ctx.counts.drain
    namespace = ctx.namespace("W2", run)
    jobs = workloads.noop_jobs(f"{namespace}:rec", n)
    # As workloads.drained does, counting the WAITs of the drain alone.
    q = ctx.queue(namespace, PROCESSES, ctx.counts.drain_concurrency)
    try:
        ctx.submit_bulk(q, jobs)
        waits = wait_calls(ctx.admin)
        q.start()
        common.wait_done(ctx.admin, f"{namespace}:rec", n, workloads.timeout_for(n))
    finally:
        q.shutdown()
    figures["W2_drain"] = n / common.span_seconds(ctx.admin, f"{namespace}:rec")
    figures["W2_waits_per_job"] = (wait_calls(ctx.admin) - waits) / n
    ctx.clean()
    return figures


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table(results: dict[int, dict[str, list[float]]]) -> str:
    lines = [f"{'figure':<20}{'replicas=0':>28}{'replicas=1':>28}{'1 / 0':>8}"]
    for name in results[0]:
        cells = []
        for replicas in SETTINGS:
            runs = results[replicas][name]
            cells.append(f"{number(statistics.median(runs))} "
                         f"({number(min(runs))}-{number(max(runs))})")
        base = statistics.median(results[0][name])
        ratio = f"{statistics.median(results[1][name]) / base:.3f}" if base else "-"
        lines.append(f"{name:<20}{cells[0]:>28}{cells[1]:>28}{ratio:>8}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each setting (default 3)")
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    parser.add_argument("--json", metavar="FILE", help="write every run's figures here")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("greenq.jobs").setLevel(logging.WARNING)
    results: dict[int, dict[str, list[float]]] = {replicas: {} for replicas in SETTINGS}
    with contextlib.ExitStack() as stack:
        master = stack.enter_context(ThrowawayRedis())
        replica = stack.enter_context(ThrowawayRedis())
        replicate(master, replica)
        ctx = ReplicatedContext(master.url, args.quick)
        stack.callback(ctx.close)
        for round_ in range(args.rounds):
            order = SETTINGS if round_ % 2 == 0 else SETTINGS[::-1]
            for replicas in order:
                figures = measure(ctx, replicas, 2 * round_ + replicas)
                log.info("round %d, replicas=%d: %s", round_ + 1, replicas,
                         ", ".join(f"{name} {value:.4g}" for name, value in figures.items()))
                for name, value in figures.items():
                    results[replicas].setdefault(name, []).append(value)
    print(table(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({f"replicas={n}": figures for n, figures in results.items()}, out, indent=2)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
