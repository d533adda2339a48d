"""Several tasks in one file, with the decorator and their own timeouts."""
import gevent.event

import greenq

results = []
gate = gevent.event.Event()


@greenq.task("core.add", timeout=2.5)
def add(params):
    results.append(("add", params["a"] + params["b"]))


@greenq.task("core.upper", timeout=30)
def upper(params):
    if params.get("block"):
        gate.wait()
    results.append(("upper", params["s"].upper()))
