"""greenq embedded in a web app under a real `gunicorn -k gevent -w 2`:
examples/flask_app.py with the hooks of greenq.contrib.gunicorn
(examples/gunicorn.conf.py), plus the fault suite's witness task
(tests/tasks/gunicorn_app.py). Jobs submitted over HTTP run in the gunicorn
workers; gunicorn's SIGTERM (or a HUP reload, or a worker's max_requests)
lets running jobs finish, and jobs still running at its graceful timeout,
or at a quick shutdown (SIGINT or SIGQUIT, also after SIGTERM), go back to
the queue before gunicorn's SIGKILL; greenq's log lines come out in
gunicorn's format; set-ups the hooks cannot serve are refused at boot with
a clear error; the same app under a threaded server, without the hooks,
only submits."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from conftest import TASKS, wait_until
from queue_state import assert_queue_empty, queued_ids
from redis_server import free_port

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "faults"))
from sidelog import SideLog  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "examples", "gunicorn.conf.py")

# gunicorn's error log format: "[2026-01-31 12:00:00 +0000] [1234] [INFO] message".
LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[(\d+)\] \[([A-Z]+)\] (.*)$")
STARTED = "greenq: started "  # what the post_worker_init hook logs per queue


class Gunicorn:
    """gunicorn -k gevent -w 2 serving tests/tasks/gunicorn_app.py on a free
    port, its whole output (error log included) in one file."""

    def __init__(self, tmp_path, redis_url: str, namespace: str, *options: str,
                 hooks: bool = True, worker_count: int = 4) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.out_path = tmp_path / f"gunicorn-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WEB_CONCURRENCY")}
        env.update(GREENQ_REDIS_URL=redis_url, GREENQ_NAMESPACE=namespace,
                   GREENQ_WORKER_COUNT=str(worker_count),
                   XDG_RUNTIME_DIR=str(tmp_path),  # gunicorn's control socket, not in $HOME
                   PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
        with open(self.out_path, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", *(("-c", CONF, "-k", "gevent") if hooks else ()),
                 "-w", "2", "--bind", f"127.0.0.1:{self.port}", "--pythonpath", TASKS, *options,
                 "gunicorn_app:app"],
                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def lines(self) -> list[tuple[int, str, str]]:
        """(pid, level, message) of every line in gunicorn's format."""
        return [(int(m[1]), m[2], m[3]) for m in map(LINE.match, self.output().splitlines()) if m]

    def unformatted(self) -> list[str]:
        """Lines not in gunicorn's format: Python's last-resort handler, a
        traceback, a print."""
        return [line for line in self.output().splitlines() if line and not LINE.match(line)]

    def booted(self) -> set[int]:
        return {int(msg.rsplit(" ", 1)[1]) for _pid, _level, msg in self.lines()
                if msg.startswith("Booting worker with pid: ")}

    def wait_for(self, predicate, what: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited ({self.process.returncode}) while waiting for "
                            f"{what}; output:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout}s; output:\n{self.output()}")
            time.sleep(0.05)

    def wait_serving(self) -> set[int]:
        """Both workers booted and each started its queue: their pids."""
        def serving():
            started = {pid for pid, _level, msg in self.lines() if msg.startswith(STARTED)}
            return started if len(started) == 2 else None
        workers = self.wait_for(serving, "both workers serving their queue")
        assert workers == self.booted()
        return workers

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/stats", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def submit(self, body: dict) -> str:
        request = urllib.request.Request(self.base + "/jobs", data=json.dumps(body).encode(),
                                         method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
            return json.loads(response.read())["id"]

    def stop(self, *signums: int, timeout: float = 60.0) -> tuple[int, float]:
        """Send the signals to the master, each after gunicorn logged the one
        before; (exit status, seconds from the first signal to the exit)."""
        started = time.monotonic()
        for index, signum in enumerate(signums):
            if index:
                name = signal.Signals(signums[index - 1]).name[3:].lower()
                self.wait_for(lambda: f"Handling signal: {name}" in self.output(),
                              f"gunicorn handling SIG{name.upper()}")
            self.process.send_signal(signum)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"gunicorn did not exit within {timeout}s; output:\n{self.output()}")
        return status, time.monotonic() - started

    def kill_all(self) -> None:
        workers = self.booted()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def gunicorn(tmp_path, redis_url, namespace):
    """gunicorn(*options) -> a started Gunicorn, killed at teardown."""
    started = []

    def start(*options: str, hooks: bool = True) -> Gunicorn:
        server = Gunicorn(tmp_path, redis_url, namespace, *options, hooks=hooks)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill_all()


def submit_running(server: Gunicorn, sidelog: SideLog, seconds: float, count: int = 8):
    """`count` witness jobs over HTTP, waited for until all run; their ids."""
    ids = [server.submit({"task": "fault.log", "params": sidelog.params(n, seconds=seconds)})
           for n in range(count)]
    server.wait_for(lambda: sum(sidelog.count("start").values()) == count,
                    f"{count} jobs running")
    return ids


def assert_no_kill_and_all_formatted(server: Gunicorn) -> None:
    output = server.output()
    assert "SIGKILL" not in output and "Worker graceful timeout" not in output, output
    assert server.unformatted() == [], output


@pytest.mark.timeout(120)
def test_sigterm_lets_jobs_submitted_over_http_finish_in_both_gunicorn_workers(
        gunicorn, tmp_path, r, namespace):
    server = gunicorn()
    workers = server.wait_serving()
    sidelog = SideLog(tmp_path / "side.log")
    # 4 greenlets per worker (GREENQ_WORKER_COUNT), so 8 running jobs are 4 in each.
    server.submit({"task": "fetch_page", "params": {"seconds": 0.01}})  # the example's own task
    submit_running(server, sidelog, seconds=3.0)
    ran_in = Counter(entry.pid for entry in sidelog.entries() if entry.what == "start")
    assert ran_in == {pid: 4 for pid in workers}

    status, _seconds = server.stop(signal.SIGTERM)

    assert status == 0, server.output()
    sidelog.assert_each_ended_once(range(8))
    assert sidelog.interrupted() == []
    assert_queue_empty(r, f"{namespace}:{{default}}:")
    assert_no_kill_and_all_formatted(server)


@pytest.mark.timeout(120)
def test_jobs_still_running_at_the_graceful_timeout_go_back_to_the_queue_before_sigkill(
        gunicorn, tmp_path, r, namespace):
    server = gunicorn("--graceful-timeout", "5")
    workers = server.wait_serving()
    sidelog = SideLog(tmp_path / "side.log")
    ids = submit_running(server, sidelog, seconds=60.0)

    status, seconds = server.stop(signal.SIGTERM)

    assert status == 0, server.output()
    assert seconds < 5 + 2, server.output()  # before gunicorn's SIGKILL at 5 s
    assert sidelog.count("end") == Counter() and len(sidelog.interrupted()) == 8
    prefix = f"{namespace}:{{default}}:"
    assert sorted(queued_ids(r, prefix)) == sorted(job_id.encode() for job_id in ids)
    assert int(r.hget(prefix + "counts", "active") or 0) == 0
    assert r.llen(prefix + "failed") == 0
    assert_no_kill_and_all_formatted(server)
    # greenq's own warning, in gunicorn's format, from each worker
    warned = {pid for pid, level, msg in server.lines()
              if level == "WARNING" and msg == "shutdown timeout (3 s) passed: giving 4 running "
                                               "jobs back to the queue"}
    assert warned == workers, server.output()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signums", [
    (signal.SIGTERM, signal.SIGINT), (signal.SIGTERM, signal.SIGQUIT), (signal.SIGINT,),
], ids=["SIGTERM then SIGINT", "SIGTERM then SIGQUIT", "SIGINT"])
def test_a_quick_shutdown_gives_running_jobs_back_at_once(
        gunicorn, tmp_path, r, namespace, signums):
    server = gunicorn()  # graceful_timeout 30 s: the jobs would run for 60
    server.wait_serving()
    sidelog = SideLog(tmp_path / "side.log")
    ids = submit_running(server, sidelog, seconds=60.0)

    status, seconds = server.stop(*signums)

    assert status == 0, server.output()
    assert seconds < 10, server.output()  # gunicorn's quick shutdown kills after 2 s
    assert sidelog.count("end") == Counter() and len(sidelog.interrupted()) == 8
    prefix = f"{namespace}:{{default}}:"
    assert sorted(queued_ids(r, prefix)) == sorted(job_id.encode() for job_id in ids)
    assert int(r.hget(prefix + "counts", "active") or 0) == 0
    assert r.llen(prefix + "failed") == 0
    assert_no_kill_and_all_formatted(server)


@pytest.mark.timeout(120)
def test_a_worker_recycled_by_max_requests_finishes_its_jobs_before_it_exits(
        gunicorn, tmp_path, r, namespace):
    # No signal here: the worker leaves its loop after one request, and the
    # worker_exit hook alone stops the queue.
    server = gunicorn("--max-requests", "1")
    server.wait_serving()
    sidelog = SideLog(tmp_path / "side.log")
    for n in range(4):
        server.submit({"task": "fault.log", "params": sidelog.params(n, seconds=2.0)})
    server.wait_for(lambda: sum(sidelog.count("end").values()) == 4, "4 jobs ended")
    assert "Autorestarting worker after current request." in server.output()

    status, _seconds = server.stop(signal.SIGTERM)

    assert status == 0, server.output()
    sidelog.assert_each_ended_once(range(4))
    assert sidelog.interrupted() == []
    assert_queue_empty(r, f"{namespace}:{{default}}:")
    assert_no_kill_and_all_formatted(server)


@pytest.mark.timeout(120)
def test_a_hup_reload_lets_old_workers_finish_their_jobs_while_new_workers_take_new_ones(
        gunicorn, tmp_path, r, namespace):
    server = gunicorn()
    old = server.wait_serving()
    sidelog = SideLog(tmp_path / "side.log")
    submit_running(server, sidelog, seconds=3.0, count=4)

    server.process.send_signal(signal.SIGHUP)  # gunicorn: new workers, then SIGTERM to the old

    def logged(prefix: str) -> set[int]:
        return {pid for pid, _level, msg in server.lines() if msg.startswith(prefix)}

    server.wait_for(lambda: logged("greenq: stopping ") == old and len(logged(STARTED)) == 4,
                    "the old workers stopping, two new ones serving")
    new = logged(STARTED) - old
    for n in range(4, 6):
        server.submit({"task": "fault.log", "params": sidelog.params(n, seconds=0.1)})
    server.wait_for(lambda: sum(sidelog.count("end").values()) == 6, "6 jobs ended")
    status, _seconds = server.stop(signal.SIGTERM)

    assert status == 0, server.output()
    sidelog.assert_each_ended_once(range(6))
    assert sidelog.interrupted() == []
    ran_in = {entry.n: entry.pid for entry in sidelog.entries() if entry.what == "end"}
    assert {ran_in[n] for n in range(4)} <= old and {ran_in[n] for n in (4, 5)} <= new
    assert_queue_empty(r, f"{namespace}:{{default}}:")
    assert_no_kill_and_all_formatted(server)


@pytest.mark.timeout(120)
def test_the_same_app_under_a_threaded_gunicorn_only_submits_and_a_worker_elsewhere_runs_the_jobs(
        gunicorn, make_queue, tmp_path, r, namespace):
    # The producer recipe: no hooks, no gevent, one module-level queue that
    # the server's threads share.
    server = gunicorn("-k", "gthread", "--threads", "4", hooks=False)
    server.wait_for(server.answers, "the threaded server answering")
    sidelog = SideLog(tmp_path / "side.log")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda n: server.submit(
            {"task": "fault.log", "resource": f"r{n % 2}", "params": sidelog.params(n)}),
            range(16)))
    status, _seconds = server.stop(signal.SIGTERM)
    assert status == 0, server.output()
    prefix = f"{namespace}:{{default}}:"
    assert len(set(ids)) == 16
    assert sorted(queued_ids(r, prefix) + r.lrange(prefix + "wait:r0", 0, -1) +
                  r.lrange(prefix + "wait:r1", 0, -1)) == sorted(i.encode() for i in ids)
    assert sidelog.entries() == [] and STARTED not in server.output()

    queue = make_queue("fault_log_sleep")
    queue.start()
    wait_until(lambda: sum(sidelog.count("end").values()) == 16, timeout=30)
    sidelog.assert_each_ended_once(range(16))
    assert_queue_empty(r, prefix)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("options, message", [
    (("--preload",), "preload_app"),
    (("-k", "sync"), "-k gevent"),
], ids=["preload_app", "sync worker"])
def test_a_setup_the_hooks_cannot_serve_is_refused_at_boot_with_a_clear_error(
        gunicorn, r, namespace, options, message):
    server = gunicorn(*options)
    try:
        status = server.process.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gunicorn still runs; output:\n{server.output()}")
    assert status != 0
    refusals = [line for line in server.output().splitlines()
                if "greenq.contrib.gunicorn: " in line and message in line]
    assert refusals, server.output()
    assert list(r.scan_iter(match=namespace + ":*")) == []
