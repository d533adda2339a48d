"""Appends "S <key> <seq>" when a run starts and "E <key> <seq>" when it ends
to an append-only file: `log_path` (set by an in-process test) or
params["log"]. One os.write per line on an O_APPEND descriptor, so lines of
concurrent runs, even of several processes, never interleave. params: k
(key), s (sequence number), sleep (seconds, optional), gate (true: wait for
`gate` before ending)."""
import os

import gevent
import gevent.event

id = "fault.scale.log"

log_path = None
gate = gevent.event.Event()
_fds = {}


def _append(path, line):
    fd = _fds.get(path)
    if fd is None:
        fd = _fds[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())


def perform(params):
    path = log_path or params["log"]
    _append(path, f"S {params['k']} {params['s']}\n")
    if params.get("gate"):
        gate.wait()
    if params.get("sleep"):
        gevent.sleep(params["sleep"])
    _append(path, f"E {params['k']} {params['s']}\n")
