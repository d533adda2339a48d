"""Tasks that spawn greenlets and return before those greenlets end.

Each appends to the O_APPEND file params["log"]: "job <n>" when perform
returns, and "child <n>" when a spawned greenlet ends normally.
params["child"] picks what the spawned greenlet does after params["delay"]
seconds: "finish" (log and end), "raise" (ValueError), "exit"
(SystemExit), "sleep" (outlive everything: sleep an hour)."""
import os
import runpy

import gevent

id = "fault.scale.spawn"


_record = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["append_line"]


def _child(params):
    gevent.sleep(params.get("delay", 0.05))
    what = params["child"]
    if what == "raise":
        raise ValueError(f"spawned greenlet of job {params['n']} raises after its job returned")
    if what == "exit":
        raise SystemExit(f"spawned greenlet of job {params['n']} raises SystemExit")
    if what == "sleep":
        gevent.sleep(3600)
    _record(params["log"], f"child {params['n']}")


def perform(params):
    for _ in range(params.get("count", 1)):
        gevent.spawn(_child, params)
    _record(params["log"], f"job {params['n']}")
