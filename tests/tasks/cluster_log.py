"""Logs each run to a plain Redis list, so runs in any process can be
checked for order and overlap. params: url (the log's Redis), log (a list
key), name, resource, sleep (seconds), fail (raise instead of returning)."""
import os
import runpy

import gevent

id = "cluster.log"
timeout = 2.0

client = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["client"]


def perform(params):
    r = client(params["url"])
    r.rpush(params["log"], f"start {params['resource']} {params['name']} {os.getpid()}")
    gevent.sleep(params.get("sleep", 0))
    r.rpush(params["log"], f"end {params['resource']} {params['name']} {os.getpid()}")
    if params.get("fail"):
        raise RuntimeError(f"job {params['name']} fails as asked")
    return params["name"]
