"""Kills its own process with SIGKILL on its first `deaths` runs (counted with
a Redis INCR), then succeeds. With params["exit"] set, the process ends with
os._exit(that status) instead.
params: url, key, deaths, exit. Records: <key>:runs (INCR per run), LIST <key>:pids
(the pid of each run), LIST <key>:done (the run number that finished)."""
import os
import runpy
import signal

import gevent

id = "proc.suicide"
timeout = 1.0

client = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["client"]


def perform(params):
    r = client(params["url"])
    key = params["key"]
    run = r.incr(key + ":runs")
    r.rpush(key + ":pids", os.getpid())
    if run <= params.get("deaths", 1):
        if params.get("exit") is not None:
            os._exit(params["exit"])
        os.kill(os.getpid(), signal.SIGKILL)
        gevent.sleep(30)
    r.rpush(key + ":done", run)
