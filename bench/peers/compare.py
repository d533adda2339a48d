"""greenq against its peers (RQ, Celery, Dramatiq, Huey, arq) on W1-W4.

    .venv/bin/python -m bench.peers.compare [--quick] [--runs 3]
        [--peers rq,celery,dramatiq,huey,arq] [--json FILE]

Starts one throwaway redis-server, runs greenq's own runner (`python -m
bench`) and then each peer's (bench/peers/run.py, in the peer's virtualenv,
built on first use) on it, one after another, FLUSHALL in between. Prints,
per workload, each library's median (min-max) and greenq's advantage: the
ratio greenq/peer, or peer/greenq for latency, so >1 always means greenq is
better. A peer that fails to install or run is reported in the table; the
exit status is non-zero only when greenq's own runner fails.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading

import redis

from bench.peers import common, venvs
from bench.redis_server import ThrowawayRedis

log = logging.getLogger("bench.peers.compare")

ROOT = venvs.ROOT
PEERS = ("rq", "celery", "dramatiq", "huey", "arq")
SIDE_TIMEOUT = {True: 900.0, False: 4 * 3600.0}  # seconds per library, by --quick
STDERR_TAIL = 20  # lines kept to explain a failure
STOP_GRACE = 60.0  # seconds for a runner to exit after closing its stderr


def run_side(name: str, command: list[str], json_path: str, timeout: float) -> dict:
    """Run one library's runner; its report, or {"error": why}. Its log lines
    pass through to our stderr as they come (a full run takes a while)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    log.info("%s: %s", name, " ".join(command))
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    with subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        expired = threading.Event()

        def expire() -> None:  # SIGTERM lets a runner stop its worker processes
            expired.set()
            process.terminate()

        watchdog = threading.Timer(timeout, expire)
        watchdog.start()
        try:
            for line in process.stderr:
                sys.stderr.write(f"[{name}] {line}")
                tail.append(line.rstrip())
            status = process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            status = process.wait()
        finally:
            watchdog.cancel()
            if process.poll() is None:  # we are being stopped: stop the runner first
                process.terminate()
                try:
                    process.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    process.kill()
    if expired.is_set():
        return {"error": f"did not finish within {timeout:.0f} s"}
    report = None
    if os.path.exists(json_path) and os.path.getsize(json_path):
        with open(json_path) as produced:
            report = json.load(produced)
    if report is None:
        last = next((line for line in reversed(tail) if line.strip()), "")
        return {"error": f"exit status {status}, no results: {last[-300:]}"}
    if status != 0:
        report.setdefault("errors", {})["exit"] = f"exit status {status}"
    return report


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def advantage(greenq: dict | None, peer: dict) -> str:
    """>1 means greenq is better, whichever way the unit points."""
    if not greenq or not peer["median"] or not greenq["median"]:
        return ""
    ratio = (greenq["median"] / peer["median"] if peer["higher_is_better"]
             else peer["median"] / greenq["median"])
    return f"greenq x{ratio:.2f}"


def table(combined: dict) -> str:
    libraries = combined["libraries"]
    system = combined["system"]
    lines = [f"greenq vs peers, {combined['date']}, {'quick (tiny counts, 1 run)' if combined['quick'] else str(combined['runs']) + ' runs each'}",
             f"machine: {system['machine']}; cpu: {system['cpu']}; Python {system['python']}; Redis {system['redis']}",
             "versions: " + ", ".join(f"{name} {report.get('version') or '?'}"
                                     for name, report in libraries.items() if "error" not in report),
             "cells: median (min-max); 'greenq xN' = greenq/peer, peer/greenq for latency: >1 means greenq is better",
             ""]
    names = list(common.UNITS) + ["W2_drain_inprocess"]
    greenq_results = libraries.get("greenq", {}).get("workloads", {})
    width = max(len(name) for name in libraries)
    for workload in names:
        rows = []
        for name, report in libraries.items():
            if "error" in report:
                continue
            figure = report.get("workloads", {}).get(workload)
            if figure is None:
                why = (report.get("errors", {}).get(workload)
                       or report.get("absent", {}).get(workload.split("_")[0]))
                if why:
                    rows.append(f"  {name:<{width}}  not measured: {why}")
                continue
            cell = f"{fmt(figure['median'])} ({fmt(figure['min'])}-{fmt(figure['max'])})"
            ratio = "" if name == "greenq" else advantage(greenq_results.get(workload), figure)
            rows.append(f"  {name:<{width}}  {cell:<32} {ratio}")
        if rows:
            unit, higher = common.UNITS.get(workload, ("jobs/s", True))
            lines.append(f"{workload} ({unit}, {'higher' if higher else 'lower'} is better)")
            lines.extend(rows)
    failed = [f"  {name}: {report['error']}" for name, report in libraries.items() if "error" in report]
    if failed:
        lines += ["", "failed:"] + failed
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.peers.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts and 1 run, for CI")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, from " + ",".join(PEERS))
    parser.add_argument("--json", metavar="FILE", help="write the combined results here")
    parser.add_argument("--greenq-module", default="bench",
                        help="module run as greenq's side (`python -m MODULE`); default: bench")
    args = parser.parse_args(argv)
    args.peers = [peer.strip() for peer in args.peers.split(",") if peer.strip()]
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    if args.quick:
        args.runs = 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like an exception: the running runner is stopped (it
    # stops its workers) and the throwaway redis-server goes away.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    common_args = ["--workloads", ",".join(common.WORKLOADS), "--runs", str(args.runs)]
    common_args += ["--quick"] if args.quick else []
    timeout = SIDE_TIMEOUT[args.quick]
    libraries: dict[str, dict] = {}
    with ThrowawayRedis() as server, tempfile.TemporaryDirectory(prefix="bench-peers-") as scratch:
        client = redis.Redis.from_url(server.url)
        system = {"machine": f"{platform.system()} {platform.machine()} ({platform.node()})",
                  "cpu": f"{common.cpu_model()} x{os.cpu_count()}", "python": platform.python_version(),
                  "redis": client.info("server")["redis_version"]}
        out = os.path.join(scratch, "greenq.json")
        libraries["greenq"] = run_side("greenq", [sys.executable, "-m", args.greenq_module, *common_args,
                                                  "--redis-url", server.url, "--json", out], out, timeout)
        for peer in args.peers:
            client.flushall()  # our own throwaway server: nothing of the last library stays
            try:
                python = venvs.ensure(peer)
            except venvs.VenvError as exc:
                log.error("%s: %s", peer, exc)
                libraries[peer] = {"error": f"install failed: {exc}"}
                continue
            out = os.path.join(scratch, f"{peer}.json")
            libraries[peer] = run_side(peer, [python, "-m", "bench.peers.run", peer, *common_args,
                                              "--redis-url", server.url, "--owned-redis", "--json", out],
                                       out, timeout)
        client.close()
    combined = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "quick": args.quick, "runs": args.runs, "system": system, "libraries": libraries}
    print(table(combined))
    if args.json:
        with open(args.json, "w") as written:
            json.dump(combined, written, indent=2)
            written.write("\n")
        log.info("combined results written to %s", args.json)
    greenq = libraries["greenq"]
    return 1 if "error" in greenq or greenq.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
