"""Tasks for the job life cycle tests (tests/test_lifecycle.py), in-process.

life.return   returns params["value"] (or, with "unstorable", something the
              serializer cannot carry; with "big", a string of that many bytes)
life.block    records its start, then sleeps params["seconds"] in small steps
              (it yields, so a cancel reaches it); records how it ended
life.fence    records greenq.current_job() as seen inside perform
"""
import time

import gevent

import greenq

started = []   # job ids, in start order
ended = {}     # job id -> "returned" | "cancelled" | repr of another exception
seen = []      # (job id, fencing token, current_job() is the Job run) of life.fence


@greenq.task("life.return")
def give_back_a_value(params):
    if "unstorable" in params:
        return {"when": object()}
    if "big" in params:
        return "x" * params["big"]
    return params.get("value")


@greenq.task("life.block", timeout=30.0)
def block(params):
    job = greenq.current_job()
    started.append(job.id)
    try:
        deadline = time.monotonic() + params.get("seconds", 30)
        while time.monotonic() < deadline:
            gevent.sleep(0.01)
    except greenq.JobCancelled:
        ended[job.id] = "cancelled"
        raise
    except BaseException as exc:
        ended[job.id] = repr(exc)
        raise
    ended[job.id] = "returned"
    return params.get("value")


@greenq.task("life.fence")
def fence(params):
    job = greenq.current_job()
    seen.append((job.id, job.fencing_token, job.params == params))
    return job.fencing_token


@greenq.task("life.stubborn", timeout=30.0)
def stubborn(params):
    """Swallows the cancel (a BaseException it should not catch) and returns."""
    job = greenq.current_job()
    started.append(job.id)
    try:
        gevent.sleep(params.get("seconds", 30))
    except greenq.JobCancelled:
        ended[job.id] = "swallowed"
        gevent.sleep(params.get("linger", 0))   # still under way a while after the cancel
    return "late"
