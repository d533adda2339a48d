"""A live queue for the dashboard's tests (tests/test_web*.py): tasks, a
queue with jobs in every state (XSS attempts in task ids, resource ids,
params, error texts and a schedule name), the dashboard served over real
HTTP by gevent's WSGIServer on a free port, and a small HTTP client."""

from __future__ import annotations

import re
import sys
from urllib.parse import urlencode
from dataclasses import dataclass, field

import gevent
import gevent.event
import urllib3
from gevent.pywsgi import WSGIServer

import greenq
from greenq.web.server import listener

# Released at a test's end so that the blocking jobs end before shutdown.
RELEASE = gevent.event.Event()

XSS_TASK = '<img src=x onerror="alert(1)">'
XSS_RESOURCE = "<script>alert('resource')</script>"
XSS_PARAM = "<script>alert('params')</script>"
XSS_ERROR = "<svg onload=alert('error')>"
XSS_SCHEDULE = "nightly<b onmouseover=alert(4)>"
MARKERS = ("<img src=x", "<script>alert(", "<svg onload", "<b onmouseover")


@greenq.task("web.block", timeout=30.0)
def block(params):
    RELEASE.wait(60)


@greenq.task("web.fail")
def fail(params):
    raise RuntimeError(params["message"])


@greenq.task("web.ok")
def ok(params):
    return params


# The README screenshot's tasks: ordinary names, ordinary failures.
@greenq.task("image.resize", timeout=30.0)
def resize(params):
    RELEASE.wait(60)


@greenq.task("email.send")
def send(params):
    if params.get("bounce"):
        raise ConnectionError(f"SMTP server refused recipient {params['to']}: 550 mailbox unavailable")


@greenq.task("invoice.render")
def render(params):
    if params.get("broken"):
        raise ValueError(f"invoice {params['invoice']}: template field 'vat_id' is missing")
    return {"pages": 2}


@dataclass
class Live:
    queue: object
    failed: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    scheduled: list[str] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)


def wait_for(predicate, timeout: float = 15.0):
    with gevent.Timeout(timeout, AssertionError(f"not met within {timeout}s")):
        while not predicate():
            gevent.sleep(0.02)


def populate(make_queue, **kwargs) -> Live:
    """A started queue holding jobs in every state; its 3 workers are all
    busy with blocking jobs, so pending and waiting jobs stay put."""
    global RELEASE
    RELEASE = gevent.event.Event()
    queue = make_queue(sys.modules[__name__], worker_count=3, unknown_task_grace=0, **kwargs)
    queue.start()
    live = Live(queue)
    live.succeeded = [queue.submit_job("web.ok", params={"n": n}) for n in range(3)]
    for job_id in live.succeeded:
        queue.wait(job_id, timeout=15)
    live.failed.append(queue.submit_job("web.fail", resource_id=XSS_RESOURCE,
                                        params={"message": XSS_ERROR, "x": XSS_PARAM}))
    live.failed.append(queue.submit_job(XSS_TASK, params={"x": XSS_PARAM}))
    wait_for(lambda: queue.stats()["failed"] == 2)
    for resource in ("res-a", XSS_RESOURCE, "res-c"):
        live.running.append(queue.submit_job("web.block", resource_id=resource))
    wait_for(lambda: queue.stats()["active"] == 3)
    live.waiting += [queue.submit_job("web.ok", resource_id="res-a", params={"n": n})
                     for n in range(2)]
    live.waiting.append(queue.submit_job(XSS_TASK, resource_id=XSS_RESOURCE,
                                         params={"x": XSS_PARAM}))
    live.pending += [queue.submit_job("web.ok", params={"n": n}) for n in range(3)]
    live.pending.append(queue.submit_job(XSS_TASK, resource_id="res-p", params={"x": XSS_PARAM}))
    live.scheduled.append(queue.submit_job("web.ok", resource_id=XSS_RESOURCE, delay=3600))
    queue.add_schedule(XSS_SCHEDULE, "web.ok", every=3600, params={"x": XSS_PARAM})
    return live


def showcase(make_queue) -> Live:
    """A queue that looks like a working day, for docs/dashboard.png."""
    global RELEASE
    RELEASE = gevent.event.Event()
    queue = make_queue(sys.modules[__name__], worker_count=4)
    queue.start()
    live = Live(queue)
    jobs = [{"task_id": "invoice.render", "resource_id": f"customer:{n % 7}",
             "params": {"invoice": 1000 + n, "broken": n % 9 == 4}} for n in range(40)]
    jobs += [{"task_id": "email.send", "params": {"to": f"user{n}@example.com",
                                                  "bounce": n % 11 == 3}} for n in range(60)]
    ended = queue.submit_jobs(jobs)
    for job_id in ended:
        queue.wait(job_id, timeout=15)
    for n in range(3):
        live.running.append(queue.submit_job("image.resize", resource_id=f"album:{n + 1}",
                                             params={"size": 1024}))
    wait_for(lambda: queue.stats()["active"] == 3)
    queue.submit_jobs([{"task_id": "image.resize", "resource_id": "album:1",
                        "params": {"size": s}} for s in (512, 256)])
    queue.submit_jobs([{"task_id": "email.send", "params": {"to": f"late{n}@example.com"},
                        "delay": 600} for n in range(5)])
    queue.add_schedule("nightly-invoices", "invoice.render", cron="0 2 * * *",
                       params={"invoice": 0})
    return live


def release() -> None:
    RELEASE.set()


class Served:
    """A WSGI app served over HTTP on 127.0.0.1 and a free port."""

    def __init__(self, app) -> None:
        self.server = WSGIServer(listener("127.0.0.1", 0), app, log=None)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.http = urllib3.PoolManager(retries=False, timeout=20)

    def request(self, method: str, path: str, *, fields=None, headers=None, password=None,
                origin: bool = True):
        headers = dict(headers or {})
        if password is not None:
            headers.update(urllib3.make_headers(basic_auth=f"admin:{password}"))
        if method == "POST" and origin:
            headers.setdefault("Origin", self.url)
        body = None
        if fields is not None:
            body = urlencode(fields, doseq=True)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return self.http.request(method, self.url + path, body=body, headers=headers,
                                 redirect=False)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, fields, **kwargs):
        return self.request("POST", path, fields=fields, **kwargs)

    def close(self) -> None:
        self.server.stop(timeout=2)
        self.http.clear()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def text(response) -> str:
    return response.data.decode()
