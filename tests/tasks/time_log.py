"""The time fault suite's witness (tests/faults/test_time_faults.py): every
run appends "<n> start|end <Redis µs> <pid>" to the Redis list params["log"],
stamped by one script call with Redis' own clock (TIME), so spans of runs in
several processes compare on one clock, and the same clock that decides
when a delayed job is due. The log's Redis is params["url"] (a connection
per process, made on first use, after any fork).

params: url, log (list key), n (the job's number), seconds (how long every
run sleeps, cooperatively, between its two lines).

"time.log": timeout 2 s, so jobs leased to a killed process are taken back
soon. "time.limited": the same, held to 10 starts a second."""
import os

import gevent
import redis

import greenq

_STAMP = """
local t = redis.call('TIME')
local us = t[1] * 1000000 + t[2]
redis.call('RPUSH', KEYS[1], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. string.format('%d', us) .. ' ' .. ARGV[3])
return 1
"""

_clients: dict = {}


def _stamp(params, what):
    url = params["url"]
    script = _clients.get(url)
    if script is None:
        script = _clients[url] = redis.Redis.from_url(url).register_script(_STAMP)
    script(keys=[params["log"]], args=[params["n"], what, os.getpid()])


def _run(params):
    _stamp(params, "start")
    gevent.sleep(params.get("seconds", 0))
    _stamp(params, "end")


@greenq.task("time.log", timeout=2.0)
def log(params):
    _run(params)


@greenq.task("time.limited", timeout=2.0, rate_limit="10/s")
def limited(params):
    _run(params)
