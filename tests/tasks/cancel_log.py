"""The witness task of tests/faults/test_cancel_races.py. Every run appends
one line per event to the file params["log"]:

    <what> <job id> <n> <pid> <time.monotonic()> <fencing token>

what: "start"; "end" (perform returned); "cancel" (JobCancelled reached
it); "stop" (any other BaseException: a shutdown's give-back, a kill).
O_APPEND, one write per line (tests/tasks/_shared.py), so lines of
concurrent runs in several processes never mix, and the file keeps what
Redis may have forgotten. time.monotonic() is CLOCK_MONOTONIC, one clock
for every process of the machine, so the test can order these lines
against its own calls.

params: log (path), n (the job's number, or a submit's sequence number),
seconds (how long the run sleeps, cooperatively: a cancel reaches it).

Tasks: cancel.log (timeout 10 s: its process heartbeats every second),
cancel.log.quick (timeout 1 s: stale after a second of silence)."""
import os
import runpy
import time

import gevent

import greenq

_append = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["append_line"]


def _line(params, what):
    job = greenq.current_job()
    _append(params["log"], f"{what} {job.id} {params['n']} {os.getpid()} "
                           f"{time.monotonic():.6f} {job.fencing_token}")


def _run(params):
    _line(params, "start")
    try:
        gevent.sleep(params.get("seconds", 0))
    except greenq.JobCancelled:
        _line(params, "cancel")
        raise
    except BaseException:
        _line(params, "stop")
        raise
    _line(params, "end")
    return params["n"]


@greenq.task("cancel.log", timeout=10.0)
def log_and_sleep(params):
    return _run(params)


@greenq.task("cancel.log.quick", timeout=1.0)
def quick(params):
    return _run(params)
