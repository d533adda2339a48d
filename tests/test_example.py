"""examples/webapp.py as a real process: submit over HTTP, jobs run in the
same process, SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from redis_server import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEBAPP = os.path.join(ROOT, "examples", "webapp.py")


def call(base: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def poll(predicate, what: str, process: subprocess.Popen, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f"webapp exited with {process.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def webapp(redis_server, namespace, tmp_path):
    """The example app on a free port; yields (base URL, process, stderr path)."""
    port = free_port()
    stderr_path = tmp_path / "webapp.stderr"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, WEBAPP, "--port", str(port), "--redis-url", redis_server.url,
             "--namespace", namespace],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
    base = f"http://127.0.0.1:{port}"

    def answers():
        try:
            return call(base, "GET", "/stats")[0] == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        poll(answers, "webapp answering /stats", process)
        yield base, process, stderr_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.timeout(120)
def test_webapp_runs_submitted_jobs_per_resource_in_order_and_exits_cleanly_on_sigterm(webapp):
    base, process, stderr_path = webapp
    submitted: dict[str, list[str]] = {f"user-{n}": [] for n in range(5)}
    for i in range(50):
        resource = f"user-{i % 5}"
        task = "fetch_page" if i % 2 else "send_email"
        params = {"seconds": 0.01, "to": f"{resource}@example.com", "n": i}
        status, body = call(base, "POST", "/jobs",
                            {"task": task, "resource": resource, "params": params})
        assert status == 201
        submitted[resource].append(body["id"])
    all_ids = {job_id for ids in submitted.values() for job_id in ids}
    assert len(all_ids) == 50

    done = poll(lambda: (ids := call(base, "GET", "/done")[1]["ids"]) and
                all_ids <= set(ids) and ids, "all 50 jobs done", process)
    assert len(done) == 50
    for resource, ids in submitted.items():
        assert [job_id for job_id in done if job_id in set(ids)] == ids, resource

    status, stats = call(base, "GET", "/stats")
    assert status == 200
    assert stats["succeeded"] == 50
    assert {key: stats[key] for key in ("pending", "active", "failed", "waiting")} == \
        {"pending": 0, "active": 0, "failed": 0, "waiting": 0}

    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, stderr_path.read_text()


@pytest.mark.timeout(60)
def test_webapp_rejects_a_body_without_a_task_and_writes_nothing(webapp):
    base, process, _stderr_path = webapp
    with pytest.raises(urllib.error.HTTPError) as error:
        call(base, "POST", "/jobs", {"resource": "r", "params": {}})
    assert error.value.code == 400
    assert call(base, "GET", "/stats")[1]["pending"] == 0
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
