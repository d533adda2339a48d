"""The fencing-token pattern from a task's side: write to a second store
only with a token larger than any it accepted before.

params: url (the queue's Redis, for the witness lists), key, store (the
second Redis), seconds. The first run sleeps `seconds` (cooperatively: its
process may be frozen meanwhile) before it writes; later runs write at once.
Each run pushes "<run> <token> <pid>" to <key>:started, then "written
<token>" or "refused <token>" to <key>:outcomes.
"""
import os
import runpy

import gevent

import greenq

id = "fencing.store"
timeout = 0.5

client = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["client"]

# The store's side: one atomic check-and-write (what a database does with a
# conditional UPDATE ... WHERE token < :token).
FENCED_WRITE = """
local last = tonumber(redis.call("GET", KEYS[1])) or 0
if tonumber(ARGV[1]) <= last then return 0 end
redis.call("SET", KEYS[1], ARGV[1])
redis.call("SET", KEYS[2], ARGV[2])
return 1
"""


def perform(params):
    witness, store, key = client(params["url"]), client(params["store"]), params["key"]
    token = greenq.current_job().fencing_token
    run = witness.incr(key + ":runs")
    witness.rpush(key + ":started", f"{run} {token} {os.getpid()}")
    if run == 1:
        gevent.sleep(params["seconds"])
    accepted = store.eval(FENCED_WRITE, 2, key + ":token", key + ":value", token,
                          f"run {run} with token {token}")
    witness.rpush(key + ":outcomes", f"{'written' if accepted else 'refused'} {token}")
