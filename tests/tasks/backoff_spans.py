"""Tasks with a retry back-off, for tests/test_backoff.py. Each run of a job
counts itself in Redis (HINCRBY <log>:runs <key>, so across processes) and
RPUSHes its span to the list params["log"] as JSON [key, start ms, end ms,
pid, "fail"|"ok"], both times by Redis' clock. A run fails while the job's
runs so far are at most params["fail_runs"] (default 0); params["hang"]:
its first run hangs (for a test to kill its process)."""
import json
import os
import runpy
import time

import greenq

client = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["client"]


def _now_ms(r):
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


def _run(params):
    r = client(params["url"])
    log = params["log"]
    run = r.hincrby(log + ":runs", params["key"], 1)
    start = _now_ms(r)
    if params.get("hang") and run == 1:
        r.rpush(log + ":hung", params["key"])
        time.sleep(3600)
    time.sleep(params.get("sleep", 0.05))
    failed = run <= params.get("fail_runs", 0)
    r.rpush(log, json.dumps([params["key"], start, _now_ms(r), os.getpid(),
                             "fail" if failed else "ok"]))
    if failed:
        raise RuntimeError(f"run {run} of {params['key']} fails on purpose")


@greenq.task("backoff.flaky", retry_delay=0.4, retry_backoff=2.0, retry_delay_max=10.0)
def flaky(params):
    _run(params)


@greenq.task("backoff.hang", timeout=1.0, retry_delay=2.0, retry_backoff=3.0,
             retry_delay_max=60.0)
def hang(params):
    _run(params)


@greenq.task("backoff.at_once")
def at_once(params):
    _run(params)
