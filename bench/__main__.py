"""greenq's benchmark suite.

    python -m bench [--workloads W1,W2,W3,W4,W5,W6,W7,W8,W9,W10] [--runs 3] [--redis-url URL]
                    [--json FILE] [--quick]

--quick: small counts and one run (unless --runs says otherwise), for CI.

Starts a throwaway redis-server on a free port unless --redis-url is given
(then only this run's own keys are written and deleted). Runs each workload
--runs times and prints median and min-max with the issue's targets beside
them (shown, not asserted), and the machine, Python, Redis and library
versions. W1-W4 are the workloads shared with the peers (bench/peers); W5-W9
are greenq's own (W7 or W8 run with W4 also gives the ratio of their p99
latencies to W4's, run by run). Exit status 1 when a workload failed, W5
found two jobs of one resource running at once (or out of order), or W9 found
more starts in one period than the rate limit allows.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

import greenq  # noqa: E402
from bench import cluster, report, scale, timing, workloads  # noqa: E402
from bench.peers import common  # noqa: E402
from bench.redis_server import ThrowawayRedis  # noqa: E402

log = logging.getLogger("bench")

MEASURE = {"W1": workloads.w1, "W2": workloads.w2, "W3": workloads.w3, "W4": workloads.w4,
           "W5": scale.w5, "W6": scale.w6, "W7": workloads.w7, "W8": timing.w8,
           "W9": timing.w9, "W10": cluster.w10}
PACKAGES = ("greenq", "gevent", "greenlet", "redis", "hiredis", "msgpack")


def run_workloads(ctx: workloads.Context, names: list[str], runs: int) -> tuple[dict, dict]:
    """Each workload `runs` times; a failing workload is logged and reported,
    and the next one runs."""
    results: dict[str, list[float]] = {}
    errors: dict[str, str] = {}
    for workload in names:
        try:
            for run in range(runs):
                ctx.clean()
                figures = MEASURE[workload](ctx, run)
                log.info("%s run %d: %s", workload, run + 1,
                         ", ".join(f"{name} {value:.4g}" for name, value in figures.items()))
                for name, value in figures.items():
                    results.setdefault(name, []).append(value)
        except Exception as exc:
            log.exception("%s failed", workload)
            for name in report.GROUPS[workload]:
                results.pop(name, None)
                errors[name] = f"{type(exc).__name__}: {exc}"
    ctx.clean()
    results.update(report.ratios(results))
    order = [name for group in names for name in report.GROUPS[group]] + list(report.RATIOS)
    return {name: report.summary(name, results[name]) for name in order if name in results}, errors


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default=",".join(MEASURE),
                        help="comma-separated, from " + ",".join(MEASURE))
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per workload (default 3; 1 with --quick)")
    parser.add_argument("--redis-url", help="use this Redis instead of a throwaway redis-server")
    parser.add_argument("--json", metavar="FILE", help="write the figures here (shared schema)")
    parser.add_argument("--quick", action="store_true", help="small counts, for CI")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--job-log", action="store_true",
                        help="keep greenq's per-job lines (greenq.jobs, INFO) on; off by default: "
                             "the bench times the queue, and a line per job floods stderr")
    args = parser.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(MEASURE)
    if unknown or not args.workloads:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown)) or '(none)'}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    return args


def stop_on_sigterm() -> None:
    """SIGTERM (bench.peers.compare's timeout) unwinds the main greenlet like
    an exception, so worker children and the redis-server are stopped."""
    main = gevent.getcurrent()
    gevent.signal_handler(signal.SIGTERM, lambda: main.throw(SystemExit(128 + signal.SIGTERM)))


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.job_log:  # worker children inherit it (greenq/joblog.py)
        logging.getLogger("greenq.jobs").setLevel(logging.WARNING)
    stop_on_sigterm()
    with contextlib.ExitStack() as stack:
        url = args.redis_url
        if url is None:
            url = stack.enter_context(ThrowawayRedis()).url
            log.info("throwaway redis-server at %s", url)
        ctx = workloads.Context(url, args.quick)
        stack.callback(ctx.close)
        figures, errors = run_workloads(ctx, args.workloads, args.runs)
        system = common.system_info(ctx.admin, PACKAGES)
    result = {"library": "greenq", "version": system["packages"]["greenq"] or greenq.__version__,
              "system": system, "quick": args.quick,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "runs": args.runs, "workloads": figures, "absent": {}, "errors": errors}
    print(report.table(result, args.runs))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
            out.write("\n")
        log.info("figures written to %s", args.json)
    failed = report.failed_checks(figures)
    if failed:
        log.error("correctness check failed: %s", ", ".join(failed))
    return 1 if errors or failed else 0


if __name__ == "__main__":
    sys.exit(main())
