"""The fencing-token pattern, a second time (tests/test_fencing_pattern.py,
the tests run in `greenq run` processes): a task keeps
its result in a store outside greenq (here a second Redis) and writes it
only when its run's fencing token is larger than the last token written
there, so a run whose lease was taken away (its process froze past the
timeout, and the job ran again elsewhere) cannot overwrite a newer run's
write. The compare-and-set is one Lua script: atomic in the store.

For contrast each run also writes the same value without the check (key
params["key"] + ":unfenced"): last writer wins there, the stale one too.

params: store (the store's URL), key, log (witness file: one line
"<what> <pid> <token> <attempt>" per event, what = start, wrote or
refused), first (seconds the first attempt sleeps before it writes)."""
import os
import runpy

import gevent

import greenq

_shared = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))

id = "fencing.witness"
timeout = 1.0

# KEYS[1] the value's hash {token, value}; ARGV[1] token, ARGV[2] value.
# Output: 1 written; 0 refused (a run with this token or a larger one wrote).
FENCED_WRITE = """
local last = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
local token = tonumber(ARGV[1])
if token <= last then return 0 end
redis.call('HSET', KEYS[1], 'token', token, 'value', ARGV[2])
return 1
"""


class StaleTokenError(Exception):
    """Raised when the store refused this run's write: a newer run wrote first."""


def perform(params):
    job = greenq.current_job()
    token, attempt = job.fencing_token, job.attempts
    store = _shared["client"](params["store"])

    def note(what):
        _shared["append_line"](params["log"], f"{what} {os.getpid()} {token} {attempt}")

    note("start")
    if attempt == 1:
        gevent.sleep(params.get("first", 0))
    value = f"written by pid {os.getpid()} with token {token}"
    store.set(params["key"] + ":unfenced", value)
    if not store.eval(FENCED_WRITE, 1, params["key"], token, value):
        note("refused")
        raise StaleTokenError(f"the store holds a newer write than token {token}")
    note("wrote")
    return token
