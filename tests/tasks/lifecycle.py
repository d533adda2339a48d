"""Tasks for the life-cycle CLI tests (no Redis of their own): one that
returns a result, one that raises, one that sleeps (to be cancelled)."""
import gevent

import greenq


@greenq.task("life.ok", timeout=5.0)
def ok(params):
    return {"got": params}


@greenq.task("life.fail", timeout=5.0)
def fail(params):
    raise ValueError(f"asked to fail: {params}")


@greenq.task("life.sleep", timeout=5.0)
def sleep(params):
    gevent.sleep(params.get("seconds", 60) if isinstance(params, dict) else 60)
    return "slept"
