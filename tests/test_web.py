"""The dashboard (greenq.web) over real HTTP against a live queue on the
test's redis-server: every page, pagination, escaping, the login, CSRF and
origin checks, read-only mode, mounting in Flask, and `greenq web` as a
process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from greenq.web import make_app

import web_live
from web_live import MARKERS, Served, csrf_of, text

PAGES = ("/", "/running", "/locked", "/pending", "/scheduled", "/schedules", "/processes",
         "/failed", "/failed?task=web.fail", "/waiting?resource=res-a", "/api/stats")


@pytest.fixture
def live(make_queue):
    state = web_live.populate(make_queue)
    yield state
    web_live.release()


@pytest.fixture
def serve():
    servers = []

    def start(app):
        servers.append(Served(app))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def assert_escaped(html: str) -> None:
    for marker in MARKERS:
        assert marker not in html, f"{marker!r} came out unescaped"


def test_every_page_answers_200_with_live_data_escaped(live, serve):
    site = serve(make_app(live.queue))
    seen = {}
    for path in PAGES:
        response = site.get(path)
        assert response.status == 200, (path, text(response)[:500])
        seen[path] = text(response)
        assert_escaped(seen[path])
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    for job_id in live.running:
        assert job_id in seen["/running"]
    assert all(job_id in seen["/failed"] for job_id in live.failed)
    assert all(job_id in seen["/pending"] for job_id in live.pending)
    assert live.scheduled[0] in seen["/scheduled"]
    assert live.waiting[0] in seen["/waiting?resource=res-a"]
    assert "res-a" in seen["/locked"]
    # The hostile values are there, escaped, not dropped.
    assert "&lt;script&gt;alert(&#39;resource&#39;)&lt;/script&gt;" in seen["/locked"]
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in seen["/failed"]
    assert "nightly&lt;b onmouseover=alert(4)&gt;" in seen["/schedules"]
    assert live.failed[1] not in seen["/failed?task=web.fail"]
    assert live.failed[0] in seen["/failed?task=web.fail"]
    assert '"failed": 2' in seen["/api/stats"] and '"active": 3' in seen["/api/stats"]
    host = os.uname().nodename
    assert host in seen["/processes"]
    for job_id in (live.failed[0], live.failed[1], live.running[1], live.pending[3]):
        page = site.get(f"/jobs/{job_id}")
        assert page.status == 200 and job_id in text(page)
        assert_escaped(text(page))
    detail = text(site.get(f"/jobs/{live.failed[0]}"))
    assert "&lt;script&gt;alert(&#39;params&#39;)&lt;/script&gt;" in detail
    assert "&lt;svg onload=alert(&#39;error&#39;)&gt;" in detail
    assert site.get("/jobs/no-such-job").status == 404
    # The chart, from the per-minute history counted in Redis: this minute's bars.
    assert re.search(r'<rect class="bar succeeded"[^>]*><title>[0-9:]+ UTC: 3 succeeded</title>',
                     seen["/"])
    assert re.search(r'<rect class="bar failed"[^>]*><title>[0-9:]+ UTC: 2 failed</title>',
                     seen["/"])
    exposition = site.get("/metrics")
    assert exposition.status == 200
    assert exposition.headers["Content-Type"].startswith("text/plain")
    assert 'greenq_jobs_total{outcome="failed",queue="default",task="web.fail"} 1.0' \
        in text(exposition) or \
        'greenq_jobs_total{queue="default",task="web.fail",outcome="failed"} 1.0' \
        in text(exposition)
    static = site.get("/static/greenq.js")
    assert static.status == 200 and static.headers["Content-Type"].startswith("text/javascript")


def test_list_pages_follow_cursors_through_every_job(make_queue, serve):
    queue = make_queue()
    ids = queue.submit_jobs([{"task_id": "web.ok", "params": {"n": n}} for n in range(23)])
    site = serve(make_app(queue))
    seen, path, pages = [], "/pending?limit=10", 0
    while path:
        html = text(site.get(path))
        pages += 1
        seen += [job_id for job_id in ids if f'value="{job_id}"' in html and job_id not in seen]
        found = re.search(r'<a rel="next" href="([^"]+)"', html)
        path = found.group(1).replace("&amp;", "&") if found else None
        assert pages < 10
    assert pages == 3
    assert sorted(seen) == sorted(ids)
    assert "limit=10" in re.search(r'rel="first" href="([^"]+)"', html).group(1)
    assert site.get("/pending?cursor=garbage").status == 400
    assert site.get("/pending?limit=0").status == 400
    assert site.get("/pending?limit=many").status == 400


def _form_post(site, path: str, fields: dict, page: str = "/failed", **kwargs):
    token = csrf_of(text(site.get(page, password=kwargs.get("password"))))
    return site.post(path, {"csrf": token, **fields}, **kwargs)


def test_retry_of_one_failed_job_and_bulk_delete_after_confirmation(live, serve):
    queue = live.queue
    site = serve(make_app(queue))
    done = _form_post(site, "/actions/retry", {"one": live.failed[0], "back": "/failed"})
    assert done.status == 303 and done.headers["Location"].endswith("/failed?done=retry.1")
    assert queue.get_job(live.failed[0]).state in ("waiting", "pending", "active")
    assert "1 job retried" in text(site.get("/failed?done=retry.1"))
    confirm = _form_post(site, "/bulk/delete", {"view": "failed", "back": "/failed"})
    assert confirm.status == 200 and queue.stats()["failed"] == 1  # asks first, deletes nothing
    page = text(confirm)
    assert re.search(r'class="matching">1</strong>', page)
    deleted = site.post("/bulk/delete", {"csrf": csrf_of(page), "view": "failed",
                                         "confirm": "yes", "back": "/failed"})
    assert deleted.status == 303 and queue.stats()["failed"] == 0
    cancelled = _form_post(site, "/actions/cancel", {"ids": live.pending[:2], "back": "/pending"},
                           page="/pending")
    assert cancelled.status == 303 and "done=cancel.2" in cancelled.headers["Location"]
    assert [queue.get_job(job_id).state for job_id in live.pending[:2]] == ["cancelled"] * 2


def test_cross_site_and_get_requests_change_nothing(live, serve):
    queue = live.queue
    site = serve(make_app(queue))
    token = csrf_of(text(site.get("/failed")))
    target = {"one": live.failed[0], "back": "/failed"}
    attempts = [
        site.post("/actions/retry", target),                                  # no token
        site.post("/actions/retry", {**target, "csrf": "x" * len(token)}),    # wrong token
        site.post("/actions/retry", {**target, "csrf": token},
                  headers={"Origin": "http://evil.example"}),                 # foreign origin
        site.post("/actions/retry", {**target, "csrf": token}, origin=False,
                  headers={"Referer": "http://evil.example/page"}),           # foreign referer
        site.post("/actions/retry", {**target, "csrf": token}, origin=False),  # neither header
        site.post("/bulk/delete", {"view": "failed", "confirm": "yes", "csrf": "nope"}),
    ]
    assert [response.status for response in attempts] == [403] * 6
    for path in ("/actions/retry", "/actions/delete", "/actions/cancel", "/bulk/delete",
                 f"/actions/retry?one={live.failed[0]}&csrf={token}"):
        assert site.get(path).status == 405
    assert queue.stats()["failed"] == 2 and queue.get_job(live.failed[0]).state == "failed"
    same_site = site.post("/actions/retry", {**target, "csrf": token}, origin=False,
                          headers={"Referer": site.url + "/failed"})
    assert same_site.status == 303 and queue.stats()["failed"] == 1
    offsite = site.post("/actions/delete", {"one": live.failed[1], "csrf": token,
                                            "back": "//evil.example/x"})
    assert offsite.status == 303 and offsite.headers["Location"].startswith("/?done=")


def test_read_only_hides_and_refuses_actions(live, serve):
    site = serve(make_app(live.queue, read_only=True))
    page = text(site.get("/failed"))
    assert live.failed[0] in page and "/actions/" not in page and "/bulk/" not in page
    refused = site.post("/actions/retry", {"one": live.failed[0], "csrf": "anything"})
    assert refused.status == 403 and "read-only" in text(refused)
    assert live.queue.stats()["failed"] == 2


def test_password_guards_every_path(live, serve):
    site = serve(make_app(live.queue, password="s3cret-pw"))
    for path in (*PAGES, "/metrics", "/static/greenq.css", "/no/such/page", "/actions/retry"):
        for password in (None, "wrong", "s3cret-pw-and-more", ""):
            response = site.get(path, password=password)
            assert response.status == 401, (path, password)
            assert response.headers["WWW-Authenticate"].lower().startswith("basic")
            assert live.queue.queue_id not in text(response)
    assert site.get("/", password="s3cret-pw").status == 200
    retried = _form_post(site, "/actions/retry", {"one": live.failed[0]}, password="s3cret-pw")
    assert retried.status == 303 and live.queue.stats()["failed"] == 1


def test_make_app_refuses_bad_arguments(make_queue):
    queue = make_queue()
    with pytest.raises(TypeError):
        make_app("redis://localhost")
    with pytest.raises(ValueError, match="password"):
        make_app(queue, password="")
    with pytest.raises(ValueError, match="secret"):
        make_app(queue, secret="short")


def test_mounted_in_a_flask_app_under_a_prefix(live, serve):
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    flask_app = Flask("host_app")

    @flask_app.route("/")
    def home():
        return "the host app"

    flask_app.wsgi_app = DispatcherMiddleware(flask_app.wsgi_app,
                                              {"/ops/greenq": make_app(live.queue)})
    site = serve(flask_app)
    assert text(site.get("/")) == "the host app"
    page = text(site.get("/ops/greenq/failed"))
    assert 'href="/ops/greenq/running"' in page and 'href="/ops/greenq/static/greenq.css"' in page
    assert f'href="/ops/greenq/jobs/{live.failed[0]}"' in page
    assert site.get("/ops/greenq/static/greenq.css").status == 200
    done = site.post("/ops/greenq/actions/retry",
                     {"csrf": csrf_of(page), "one": live.failed[0], "back": "/failed"})
    assert done.status == 303
    assert done.headers["Location"] == "/ops/greenq/failed?done=retry.1"
    assert live.queue.stats()["failed"] == 1


# -- greenq web, the command ------------------------------------------------------

def _greenq(*args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "greenq", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_only_loopback_addresses_count_as_loopback():
    from greenq.web.auth import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.0.2.1", "example.com", ""]))


def test_web_refuses_a_non_loopback_host_without_a_password(redis_url):
    host = "0.0.0.0"
    env = {**os.environ}
    env.pop("GREENQ_WEB_PASSWORD", None)
    run = _greenq("web", "--host", host, "--port", "0", "--redis-url", redis_url, env=env)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 2
    assert f"refusing to serve the dashboard on {host} without a password" in err


@pytest.fixture
def redis_user(r):
    """A Redis user with a password, so the queue's URL carries a secret."""
    password = "redis-Pw-" + os.urandom(6).hex()
    r.execute_command("ACL", "SETUSER", "webtest", "on", f">{password}", "~*", "&*", "+@all")
    yield "webtest", password
    r.execute_command("ACL", "DELUSER", "webtest")


def test_web_command_serves_and_never_shows_the_redis_password(redis_server, redis_user,
                                                               namespace, make_queue):
    user, secret = redis_user
    url = f"redis://{user}:{secret}@127.0.0.1:{redis_server.port}/0"
    queue = make_queue(redis_url=url)
    job_id = queue.submit_job("web.ok", params={"n": 1})
    env = {**os.environ, "GREENQ_WEB_PASSWORD": "dash-pw"}
    run = _greenq("web", "--host", "0.0.0.0", "--port", "0", "--redis-url", url,
                  "--namespace", namespace, env=env)
    try:
        port, logged = _bound_port(run)
        site = Served.__new__(Served)
        site.url, site.http = f"http://127.0.0.1:{port}", __import__("urllib3").PoolManager()
        assert site.get("/").status == 401
        pages = [text(site.get(path, password="dash-pw")) for path in (*PAGES, f"/jobs/{job_id}")]
        assert job_id in pages[3]
        pages.append(text(site.get("/jobs/missing", password="dash-pw")))
        refused = site.post("/actions/cancel", {"one": job_id}, password="dash-pw")
        pages.append(text(refused))
    finally:
        run.terminate()
        out, err = run.communicate(timeout=30)
        err = logged + err
    assert run.returncode == 0, err
    assert refused.status == 403
    for shown in (*pages, out, err):
        assert secret not in shown
    assert "dash-pw" not in err
    assert f"127.0.0.1:{redis_server.port}/0" in err


def _bound_port(run) -> tuple[int, str]:
    """The port `greenq web --port 0` logged, read from its stderr, and
    the lines read."""
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        line = run.stderr.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(r"on http://[^ ]+:(\d+)/", line)
        if found:
            return int(found.group(1)), "".join(seen)
    raise AssertionError("greenq web did not say where it listens: " + "".join(seen))


def test_pages_of_a_queue_over_three_partitions(make_queue, serve):
    live = web_live.populate(make_queue, partitions=3)
    try:
        site = serve(make_app(live.queue))
        for path in PAGES:
            response = site.get(path)
            assert response.status == 200, (path, text(response)[:300])
            assert_escaped(text(response))
        assert all(job_id in text(site.get("/pending")) for job_id in live.pending)
        assert all(job_id in text(site.get("/running")) for job_id in live.running)
    finally:
        web_live.release()


def test_redis_down_gives_503_without_the_password(serve, caplog):
    from greenq import GreenQueue

    queue = GreenQueue(redis_url="redis://someone:hunter2-secret@127.0.0.1:1/0")
    site = serve(make_app(queue))
    response = site.get("/failed")
    assert response.status == 503
    assert "127.0.0.1:1/0" in text(response)
    assert "hunter2" not in text(response) and "hunter2" not in caplog.text
    assert "hunter2" not in repr(queue)
