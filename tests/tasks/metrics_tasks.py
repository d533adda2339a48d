"""Tasks for tests/test_metrics.py, in-process.

m.ok      sleeps params["sleep"] seconds (default 0), returns
m.fail    raises ValueError
m.flaky   raises on its first attempt, succeeds after
m.block   sleeps in small steps until cancelled (or params["seconds"])
"""
import time

import gevent

import greenq


@greenq.task("m.ok")
def ok(params):
    gevent.sleep((params or {}).get("sleep", 0))
    return True


@greenq.task("m.fail")
def fail(params):
    raise ValueError("asked to fail")


@greenq.task("m.flaky")
def flaky(params):
    if greenq.current_job().attempts == 1:
        raise RuntimeError("first attempt fails")
    return "second time"


@greenq.task("m.block", timeout=30.0)
def block(params):
    deadline = time.monotonic() + (params or {}).get("seconds", 30)
    while time.monotonic() < deadline:
        gevent.sleep(0.01)
