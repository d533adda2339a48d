"""A read-modify-write on one Redis counter (GET, yield, SET): only a working
resource lock keeps concurrent runs from losing increments.
params: url, key (the counter; each finished run is also pushed to <key>:done)."""
import os
import runpy

import gevent

id = "proc.rmw"
timeout = 1.0

client = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["client"]


def perform(params):
    r = client(params["url"])
    value = int(r.get(params["key"]) or 0)
    gevent.sleep(0.01)
    r.set(params["key"], value + 1)
    r.rpush(params["key"] + ":done", os.getpid())
