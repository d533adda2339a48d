"""Logs ("start", name) / ("end", name) around each run in `log`, in the
order they happen. params: name, block (wait for `gate`), sleep (seconds,
capped by `sleep_cap` when a test sets it)."""
import gevent
import gevent.event

id = "core.record"
log = []
gate = gevent.event.Event()
sleep_cap = None


def perform(params):
    name = params.get("name")
    log.append(("start", name))
    if params.get("block"):
        gate.wait()
    seconds = params.get("sleep", 0)
    if sleep_cap is not None:
        seconds = min(seconds, sleep_cap)
    gevent.sleep(seconds)
    log.append(("end", name))
