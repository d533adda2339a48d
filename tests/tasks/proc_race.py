"""Two roles in one worker child, to kill it right after another job's
success was committed to Redis (and before the child can forward it).
params: url, prefix (the queue's key prefix), marker (a key), role:
  "quick": sets `marker` and returns (a success);
  "killer": waits until `marker` is set and no job record but its own is
            left under `prefix` (the quick job's success is in Redis), then
            SIGKILLs its own process."""
import os
import runpy
import signal

id = "proc.race"
timeout = 1.0

client = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["client"]


def _only_this_one_unfinished(r, prefix):
    # The quick job's success landed: its record reads succeeded (kept for
    # result_ttl) or is gone (result_ttl 0).
    states = [r.hget(key, "state") for key in r.keys(prefix + "job:*")]
    return sum(state != b"succeeded" for state in states) == 1


def perform(params):
    r = client(params["url"])
    if params["role"] == "quick":
        r.set(params["marker"], 1)
        return
    while not (r.exists(params["marker"]) and _only_this_one_unfinished(r, params["prefix"])):
        pass  # each check is a Redis round trip (a yield)
    os.kill(os.getpid(), signal.SIGKILL)
