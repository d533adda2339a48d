"""Two tasks for the failed-queue filter tests: each raises when params has
a true "fail", and first notes its run in the test Redis when params has
"url" and "key" (RPUSH <key>:done <mark>)."""
import os
import runpy

import greenq

client = runpy.run_path(os.path.join(os.path.dirname(__file__), "_shared.py"))["client"]


def _run(params):
    if params.get("url"):
        client(params["url"]).rpush(params["key"] + ":done", params.get("mark", ""))
    if params.get("fail"):
        raise ValueError(f"asked to fail: {params['fail']}")


@greenq.task("filters.a", timeout=2.0)
def task_a(params):
    _run(params)


@greenq.task("filters.b", timeout=2.0)
def task_b(params):
    _run(params)
