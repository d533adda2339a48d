"""Run W1-W4 for one peer library and write the shared result JSON.

    <peer venv>/bin/python -m bench.peers.run PEER [--workloads W1,W2,W3,W4]
        [--runs 3] [--quick] [--redis-url URL [--owned-redis]] [--json FILE]

Runs inside the peer's virtualenv (bench.peers.compare builds it and calls
this). PEER names a module bench/peers/<PEER>_peer.py with a `Peer` class:

    name, packages (library first), bulk (has a bulk submit call),
    absent {workload: why it is not measured},
    submit_each(params_iterable)  one library submit call per job,
    submit_bulk(params_list)      the library's bulk call (when bulk),
    worker_commands(concurrency)  argv lists that run PROCESSES worker
                                  processes with `concurrency` slots each,
    close().

Without --redis-url it starts a throwaway redis-server and FLUSHALLs it
between measurements; with --redis-url it deletes only keys containing its
own namespace, unless --owned-redis says the caller started that server.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time
import uuid

import redis

from bench.peers import common
from bench.peers.common import PROCESSES, job_params
from bench.peers.workers import WorkerGroup
from bench.redis_server import ThrowawayRedis

log = logging.getLogger("bench.peers.run")

IDLE_SETTLE = 0.5      # seconds for idle workers to reach their blocking wait (W4)
WARM_UP_TIMEOUT = 120.0


class Runner:
    def __init__(self, peer, client: redis.Redis, counts: common.Counts, namespace: str,
                 may_flush_all: bool) -> None:
        self.peer = peer
        self.client = client
        self.counts = counts
        self.namespace = namespace
        self.may_flush_all = may_flush_all

    def key(self, workload: str, run: int) -> str:
        return f"{self.namespace}:{workload}:{run}"

    def workers(self, concurrency: int) -> WorkerGroup:
        return WorkerGroup(self.peer.worker_commands(concurrency),
                           {"BENCH_PEER_NS": self.namespace,
                            "BENCH_PEER_REDIS_URL": os.environ["BENCH_PEER_REDIS_URL"],
                            "BENCH_PEER_CONCURRENCY": str(concurrency),
                            "BENCH_PEER_WORKER": "1"})

    def flush(self) -> None:
        """Between measurements: nothing of the last one may slow the next."""
        if self.may_flush_all:
            self.client.flushall()
        else:
            common.delete_matching(self.client, f"*{self.namespace}*")

    def enqueue(self, params: list[dict]) -> None:
        if self.peer.bulk:
            for start in range(0, len(params), common.BULK_CHUNK):
                self.peer.submit_bulk(params[start:start + common.BULK_CHUNK])
        else:
            self.peer.submit_each(params)

    @staticmethod
    def timeout_for(jobs: int) -> float:
        return 120.0 + jobs * 0.05

    # -- one run of each workload; each returns {workload name: figure} ----

    def w1(self, run: int) -> dict:
        key = self.key("W1", run)
        n = self.counts.submit
        figures = {}
        self.peer.submit_each([job_params(key)])  # connect outside the timing
        began = time.perf_counter()
        self.peer.submit_each([job_params(key)] * n)
        figures["W1_submit_single"] = n / (time.perf_counter() - began)
        if self.peer.bulk:
            self.flush()
            self.peer.submit_bulk([job_params(key)])
            began = time.perf_counter()
            self.enqueue([job_params(key)] * n)
            figures["W1_submit_bulk"] = n / (time.perf_counter() - began)
        return figures

    def drained(self, key: str, params: list[dict], concurrency: int) -> float:
        """Queue every job, then start the workers: seconds from the first
        job's start to the last job's finish."""
        self.enqueue(params)
        with self.workers(concurrency) as workers:
            try:
                common.wait_done(self.client, key, len(params), self.timeout_for(len(params)),
                                 workers.alive)
                log.debug("workers' output:\n%s", workers.output_tail())
            except Exception:
                log.error("workers' output:\n%s", workers.output_tail())
                raise
        return common.span_seconds(self.client, key)

    def w2(self, run: int) -> dict:
        key = self.key("W2", run)
        n = self.counts.drain
        seconds = self.drained(key, [job_params(key)] * n, self.counts.drain_concurrency)
        return {"W2_drain": n / seconds}

    def w3(self, run: int) -> dict:
        key = self.key("W3", run)
        params = [job_params(key, s=self.counts.sleep_seconds)] * self.counts.sleepers
        seconds = self.drained(key, params, self.counts.sleep_concurrency)
        return {"W3_efficiency": self.counts.ideal_sleep_wall() / seconds}

    def w4(self, run: int) -> dict:
        key = self.key("W4", run)
        n = self.counts.latency
        with self.workers(self.counts.drain_concurrency) as workers:
            try:
                self.warm_up(f"{key}:warm", workers)
                time.sleep(IDLE_SETTLE)
                self.peer.submit_each(common.paced([job_params(key)] * n, self.counts.latency_rate))
                common.wait_done(self.client, key, n, self.timeout_for(n), workers.alive)
            except Exception:
                log.error("workers' output:\n%s", workers.output_tail())
                raise
        latencies = common.latencies_ms(self.client, key)
        return {"W4_latency_p50_ms": common.percentile(latencies, 0.50),
                "W4_latency_p99_ms": common.percentile(latencies, 0.99)}

    def warm_up(self, key: str, workers: WorkerGroup) -> None:
        """Until every worker process has run a job (so all are up and idle)."""
        deadline = time.monotonic() + WARM_UP_TIMEOUT
        sent = 0
        while self.client.scard(f"{key}:pids") < PROCESSES:
            if not workers.alive():
                raise RuntimeError("a worker process exited during start-up")
            if time.monotonic() > deadline:
                if self.client.scard(f"{key}:pids") == 0:
                    raise TimeoutError(f"no worker ran a job within {WARM_UP_TIMEOUT:.0f} s")
                log.warning("only %d of %d worker processes ran a warm-up job; measuring anyway",
                            self.client.scard(f"{key}:pids"), PROCESSES)
                break
            self.peer.submit_each([job_params(key, w=1)] * 10)
            sent += 10
            time.sleep(0.2)
        common.wait_done(self.client, key, sent, self.timeout_for(sent), workers.alive)


def names_of(workload: str, peer) -> list[str]:
    return {"W1": ["W1_submit_single"] + (["W1_submit_bulk"] if peer.bulk else []),
            "W2": ["W2_drain"], "W3": ["W3_efficiency"],
            "W4": ["W4_latency_p50_ms", "W4_latency_p99_ms"]}[workload]


def run_workloads(runner: Runner, workloads: list[str], runs: int) -> tuple[dict, dict]:
    results: dict[str, list[float]] = {}
    errors: dict[str, str] = {}
    for workload in workloads:
        if workload in runner.peer.absent:
            log.warning("%s: %s is not measured: %s", runner.peer.name, workload,
                        runner.peer.absent[workload])
            continue
        measure = getattr(runner, workload.lower())
        try:
            for run in range(runs):
                runner.flush()
                figures = measure(run)
                log.info("%s %s run %d: %s", runner.peer.name, workload, run + 1,
                         ", ".join(f"{name} {value:.4g}" for name, value in figures.items()))
                for name, value in figures.items():
                    results.setdefault(name, []).append(value)
        except Exception as exc:  # report it, go on with the next workload
            log.exception("%s %s failed", runner.peer.name, workload)
            for name in names_of(workload, runner.peer):
                results.pop(name, None)
                errors[name] = f"{type(exc).__name__}: {exc}"
    runner.flush()
    return {name: common.summary(runs_, name) for name, runs_ in results.items()}, errors


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.peers.run", description=__doc__.split("\n")[0])
    parser.add_argument("peer")
    parser.add_argument("--workloads", default=",".join(common.WORKLOADS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny counts, for CI")
    parser.add_argument("--redis-url")
    parser.add_argument("--owned-redis", action="store_true",
                        help="the caller started the Redis at --redis-url: FLUSHALL is allowed")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(common.WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM (compare's timeout) unwinds like an exception, so the worker
    # processes and the throwaway redis-server are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.DEBUG if os.environ.get("BENCH_PEER_DEBUG") else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = None if args.redis_url else ThrowawayRedis().start()
    url = args.redis_url or server.url
    namespace = f"bpeer-{args.peer}-{uuid.uuid4().hex[:8]}"
    # The peer module builds its app from these at import, like its workers do.
    os.environ["BENCH_PEER_NS"] = namespace
    os.environ["BENCH_PEER_REDIS_URL"] = url
    client = redis.Redis.from_url(url)
    try:
        module = importlib.import_module(f"bench.peers.{args.peer}_peer")
        peer = module.Peer()
        runner = Runner(peer, client, common.QUICK if args.quick else common.FULL, namespace,
                        may_flush_all=server is not None or args.owned_redis)
        try:
            workloads, errors = run_workloads(runner, args.workloads, 1 if args.quick else args.runs)
        finally:
            peer.close()
        system = common.system_info(client, peer.packages)
        report = {"library": peer.name, "version": system["packages"][peer.packages[0]],
                  "system": system, "quick": args.quick,
                  "workloads": workloads, "absent": dict(peer.absent), "errors": errors}
        if args.json:
            with open(args.json, "w") as out:
                json.dump(report, out, indent=2)
        for name, figure in workloads.items():
            print(f"{peer.name:10} {name:20} {figure['median']:12.4g} {figure['unit']}")
        return 1 if errors else 0
    finally:
        client.close()
        if server is not None:
            server.close()


if __name__ == "__main__":
    sys.exit(main())
