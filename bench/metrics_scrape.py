"""How long a /metrics scrape takes on a queue with 100 tasks and 10 live
worker processes: every task has run jobs (some failed, some retried), so
the metrics hash holds every task's counters and both histograms.

    python -m bench.metrics_scrape [--scrapes 50] [--tasks 100] [--processes 10]

Times greenq.metrics.render (what /metrics serves) and, when greenq.web is
importable, a GET of /metrics through `greenq web`'s WSGI app over HTTP;
prints the median, p95 and max milliseconds. Target (issue 16): within 50 ms.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

import greenq  # noqa: E402
from greenq import metrics  # noqa: E402
from bench.redis_server import ThrowawayRedis  # noqa: E402

TASK = '''
@greenq.task("scrape.t{n:03d}", timeout=30.0)
def t{n:03d}(params):
    if params.get("fail"):
        raise ValueError("asked to fail")
'''


def tasks_source(count: int) -> str:
    """A tasks file of `count` tasks (greenq finds decorated module attributes)."""
    return "import greenq\n" + "".join(TASK.format(n=n) for n in range(count))


def timed(call, scrapes: int) -> dict:
    call()  # warm: scripts loaded, connections open
    spans = []
    for _ in range(scrapes):
        began = time.perf_counter()
        call()
        spans.append((time.perf_counter() - began) * 1000)
    spans.sort()
    return {"median_ms": statistics.median(spans),
            "p95_ms": spans[int(len(spans) * 0.95) - 1], "max_ms": spans[-1]}


def measure(scrapes: int, tasks: int, processes: int) -> dict:
    with ThrowawayRedis() as server, tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "scrape_tasks.py")
        with open(path, "w") as file:
            file.write(tasks_source(tasks))
        q = greenq.GreenQueue(redis_url=server.url, namespace="bench-scrape",
                              child_process_count=processes, worker_count=10)
        q.register_task(path)
        q.submit_jobs([{"task_id": f"scrape.t{i % tasks:03d}", "retries": 1 if i % 7 == 0 else 0,
                        "params": {"fail": i % 10 == 0}} for i in range(tasks * 20)])
        q.start()
        try:
            deadline = time.monotonic() + 120
            while q.stats()["workers"] < processes or q.stats()["pending"] + q.stats()["active"]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"jobs not drained: {q.stats()}")
                time.sleep(0.1)
            time.sleep(2)  # let the children settle after the drain
            body, _ = metrics.render(q)
            figures = {"tasks": tasks, "processes": q.stats()["workers"],
                       "exposition_bytes": len(body),
                       "render": timed(lambda: metrics.render(q), scrapes)}
            if importlib.util.find_spec("greenq.web") is None:
                return figures
            figures["http"] = timed_http(q, scrapes)
            return figures
        finally:
            q.shutdown()


def timed_http(q: greenq.GreenQueue, scrapes: int) -> dict:
    from gevent.pywsgi import WSGIServer

    from greenq.web import make_app

    server = WSGIServer(("127.0.0.1", 0), make_app(q), log=None)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        return timed(lambda: urllib.request.urlopen(url, timeout=10).read(), scrapes)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--processes", type=int, default=10)
    args = parser.parse_args()
    json.dump(measure(args.scrapes, args.tasks, args.processes), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
