"""For the process-death and fencing tests. Every run INCRs <key>:runs and
pushes "<run> <pid>" to <key>:started; only the first run misbehaves:
mode "sleep" sleeps (cooperatively) for `seconds`, mode "block" blocks the
whole process (the hub included, so no heartbeat goes out) for `seconds`
with the unpatched time.sleep; any other mode returns at once. A finished
run pushes "<run> <pid>" to <key>:done.
params: url, key, mode, seconds."""
import os
import runpy

import gevent
import gevent.monkey

id = "fault.hang"
timeout = 0.5

client = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["client"]


def perform(params):
    r = client(params["url"])
    key = params["key"]
    run = r.incr(key + ":runs")
    r.rpush(key + ":started", f"{run} {os.getpid()}")
    if run == 1:
        if params.get("mode") == "sleep":
            gevent.sleep(params.get("seconds", 30))
        elif params.get("mode") == "block":
            gevent.monkey.get_original("time", "sleep")(params.get("seconds", 2))
    r.rpush(key + ":done", f"{run} {os.getpid()}")
