"""Sleeps `seconds`, appending "<n> start" and "<n> end" to the file `log`
(O_APPEND, so every run shows, whatever happens to Redis)."""
import os

import gevent

id = "fault.stall"
timeout = 1.0


def _append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def perform(params):
    _append(params["log"], f"{params['n']} start")
    gevent.sleep(params["seconds"])
    _append(params["log"], f"{params['n']} end")
