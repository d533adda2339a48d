"""The fault suite's witness: every run appends "<n> <pid> start <run>" to the
file params["log"] when it begins and "<n> <pid> end <run>" when it returns
(O_APPEND, one write per line, so lines of concurrent runs in several
processes never mix, and the file survives whatever happens to Redis).
<run> counts the starts of job n already in the file, plus one, when the
job asks for a first run that differs ("first", "fail_first"); otherwise it
is 0, which spares big runs a read of the whole file per job.

params: log (path), n (the job's number), seconds (how long every run
sleeps, cooperatively), first (how long the first run sleeps instead),
fail_first (the first run raises after its "start" line, writing
"<n> <pid> fail <run>" instead of "end").

The same file defines "fault.log.patient": the same task with a 30 s timeout."""
import os
import runpy

import gevent

import greenq

id = "fault.log"
timeout = 1.0


_append = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["append_line"]


def _runs_so_far(path, n):
    try:
        with open(path) as file:
            return sum(1 for line in file if line.split()[:1] == [str(n)] and " start " in line)
    except FileNotFoundError:
        return 0


def perform(params):
    path, n = params["log"], params["n"]
    counted = "first" in params or "fail_first" in params
    run = _runs_so_far(path, n) + 1 if counted else 0
    _append(path, f"{n} {os.getpid()} start {run}")
    seconds = params.get("seconds", 0)
    if run == 1:
        seconds = params.get("first", seconds)
    if run == 1 and params.get("fail_first"):
        _append(path, f"{n} {os.getpid()} fail {run}")
        raise RuntimeError(f"job {n} fails its first run, as asked")
    gevent.sleep(seconds)
    _append(path, f"{n} {os.getpid()} end {run}")


@greenq.task("fault.log.patient", timeout=30.0)
def patient(params):
    """The same witness with a 30 s task timeout: a stale flush reclaims its
    jobs only after 30 s of silence (tests/faults/test_process_faults.py)."""
    perform(params)
