"""Sleeps `seconds`, appending "<n> start" and "<n> end" to the file `log`
(O_APPEND, so every run shows, whatever happens to Redis)."""
import os
import runpy

import gevent

id = "fault.stall"
timeout = 1.0


_append = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["append_line"]


def perform(params):
    _append(params["log"], f"{params['n']} start")
    gevent.sleep(params["seconds"])
    _append(params["log"], f"{params['n']} end")
