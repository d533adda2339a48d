"""Sleeps params["seconds"] (cooperatively) without touching Redis, so it
keeps running through a Redis outage. Each run appends params["n"] to the
module-level `runs` when it starts and to `finished` when it ends (in the
process that registered this file)."""
import gevent

id = "fault.slow"

runs = []
finished = []


def perform(params):
    runs.append(params["n"])
    gevent.sleep(params.get("seconds", 0))
    finished.append(params["n"])
