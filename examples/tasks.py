"""Example tasks: I/O-bound work (gevent.sleep stands in for an HTTP call or a
query), so one process runs many of them at once."""

import random

import gevent

import greenq


@greenq.task("fetch_page", timeout=10.0)
def fetch_page(params):
    """Pretend to download params["url"]; params["seconds"] sets the wait."""
    params = params or {}
    gevent.sleep(params.get("seconds", random.uniform(0.01, 0.05)))


@greenq.task("send_email", timeout=10.0)
def send_email(params):
    """Pretend to send a mail to params["to"]; a missing "to" is a failure."""
    params = params or {}
    if not params.get("to"):
        raise ValueError("send_email needs params['to']")
    gevent.sleep(params.get("seconds", 0.02))
