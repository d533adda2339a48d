"""A read-modify-write on one Redis counter (GET, yield, SET): only a working
resource lock keeps concurrent runs from losing increments.
params: url, key (the counter; each finished run is also pushed to <key>:done)."""
import os

import gevent
import redis

id = "proc.rmw"
timeout = 1.0

_clients = {}


def perform(params):
    url = params["url"]
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url)
    r = _clients[url]
    value = int(r.get(params["key"]) or 0)
    gevent.sleep(0.01)
    r.set(params["key"], value + 1)
    r.rpush(params["key"] + ":done", os.getpid())
