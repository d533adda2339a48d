"""Tasks that block the gevent hub or overrun their time limit. Each appends
"<n> start" / "<n> end" to the file params["log"] (O_APPEND)."""
import os
import runpy
import time

import gevent
from gevent import monkey

import greenq

_real_sleep = monkey.get_original("time", "sleep")


_append = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["append_line"]


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _logged(work):
    def perform(params):
        _append(params["log"], f"{params['n']} start")
        work(params["seconds"])
        _append(params["log"], f"{params['n']} end")
    return perform


spin = greenq.task("hub.spin", timeout=1.0)(_logged(_spin))
unpatched_sleep = greenq.task("hub.unpatched_sleep", timeout=1.0)(_logged(_real_sleep))
limited_sleep = greenq.task("hub.limited_sleep", timeout=1.0, time_limit=0.5)(_logged(gevent.sleep))
limited_spin = greenq.task("hub.limited_spin", timeout=1.0, time_limit=1.0)(_logged(_spin))
