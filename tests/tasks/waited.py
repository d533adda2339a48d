"""Tasks for the wait() tests (tests/test_wait.py), run in-process and by
`greenq run` (time.sleep is gevent's there, and in the patched test suite).

waited.value   sleeps params["seconds"] (default 0), then returns params["value"]
waited.raise   raises ValueError(params["message"])
waited.until   sleeps until the wall-clock time params["at"], returns params["value"]
waited.block   sleeps params["seconds"] in small steps (a cancel reaches it)
"""
import time

import greenq


@greenq.task("waited.value", timeout=30.0)
def value(params):
    time.sleep(params.get("seconds", 0))
    return params.get("value")


@greenq.task("waited.raise")
def fail(params):
    raise ValueError(params["message"])


@greenq.task("waited.until", timeout=30.0)
def until(params):
    delay = params["at"] - time.time()
    if delay > 0:
        time.sleep(delay)
    return params.get("value")


@greenq.task("waited.block", timeout=30.0)
def block(params):
    deadline = time.monotonic() + params.get("seconds", 30)
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return "not cancelled"
