"""Sleeps, recording every run in Redis, for the process and signal tests.

params: url (the test Redis), key (a prefix in the test's namespace), n (the
job's number), first (seconds the first run of job n sleeps), seconds (seconds
every later run sleeps). Records: HASH <key>:runs n -> runs started, LIST
<key>:started "<n> <pid>" per run, LIST <key>:done n per finished run."""
import os
import runpy

import gevent

id = "proc.sleep"
timeout = 1.0

client = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["client"]


def perform(params):
    r = client(params["url"])
    key, n = params["key"], params.get("n", 0)
    run = r.hincrby(key + ":runs", n, 1)
    r.rpush(key + ":started", f"{n} {os.getpid()}")
    seconds = params.get("seconds", 0)
    if run == 1:
        seconds = params.get("first", seconds)
    gevent.sleep(seconds)
    r.rpush(key + ":done", n)
