"""Records each run of a scheduled job in Redis, for tests/test_schedules.py
and tests/faults/test_schedule_*.py.
params: url, key, and optionally sleep (seconds a run takes).
Writes: <key>:runs LIST of job ids (each holds its fire time, see
greenq.schedules.fire_job_id); <key>:per_second HASH fire second -> runs;
<key>:started LIST of "job id, Redis ms at start"; <key>:running counter and
<key>:most_at_once (the most runs seen at once)."""
import os
import runpy

import gevent

import greenq

id = "sched.record"
timeout = 5.0

client = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["client"]


def perform(params):
    r = client(params["url"])
    key = params["key"]
    job = greenq.current_job()
    fire_ms = int(job.id.rsplit(":", 1)[1])
    seconds, micros = r.time()
    now_ms = seconds * 1000 + micros // 1000
    at_once = r.incr(key + ":running")
    try:
        pipe = r.pipeline(transaction=False)
        pipe.rpush(key + ":runs", job.id)
        pipe.hincrby(key + ":per_second", fire_ms // 1000, 1)
        pipe.rpush(key + ":started", f"{job.id} {now_ms}")
        pipe.eval("local m = tonumber(redis.call('GET', KEYS[1]) or 0) "
                  "if tonumber(ARGV[1]) > m then redis.call('SET', KEYS[1], ARGV[1]) end",
                  1, key + ":most_at_once", at_once)
        pipe.execute()
        gevent.sleep(params.get("sleep", 0))
    finally:
        r.decr(key + ":running")
