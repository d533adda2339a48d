"""What greenq says about the Redis server: Lua-flawed releases at start, a
restart (new run_id) after an outage."""

from __future__ import annotations

import logging
import os
import signal

import pytest

from conftest import TASKS, wait_until
from greenq import GreenQueue
from greenq.server_check import lua_flaw_warning
from redis_server import RedisServer
from sidelog import GreenqRun


@pytest.mark.parametrize("version, flawed", [
    ("5.0.14", True), ("6.2.19", True), ("6.2.20", False), ("7.0.15", True),
    ("7.2.10", True), ("7.2.11", False), ("7.4.5", True), ("7.4.6", False),
    ("8.0.3", True), ("8.0.4", False), ("8.2.1", True), ("8.2.2", False), ("8.4.0", False)])
def test_lua_flaw_warning_names_the_fixed_releases_for_flawed_versions_only(version, flawed):
    warning = lua_flaw_warning({"redis_version": version})
    assert (warning is not None) == flawed
    if flawed:
        assert "CVE-2025-49844" in warning and "7.2.11" in warning and version in warning
        assert "distributions' builds may carry the fix" in warning
        assert "\n" not in warning  # one log line, as gunicorn's format and the demo's bar need


def test_start_warns_about_the_running_servers_lua_flaw(make_queue, r, caplog):
    version = r.info("server")["redis_version"]
    queue = make_queue("echo")
    with caplog.at_level(logging.WARNING, logger="greenq"):
        queue.start()
    warned = [rec.getMessage() for rec in caplog.records if "CVE-2025-49844" in rec.getMessage()]
    assert bool(warned) == (lua_flaw_warning({"redis_version": version}) is not None)


@pytest.mark.timeout(90)
def test_a_redis_restart_without_persistence_is_logged_once_and_the_worker_goes_on(caplog):
    server = RedisServer().start()
    errors, done = [], []
    queue = GreenQueue(redis_url=server.url, namespace="restart", worker_count=4)
    queue.register_task(os.path.join(TASKS, "echo.py"))
    queue.on("error", errors.append)
    queue.on("job_success", done.append)

    def restarts():
        return [rec for rec in caplog.records if "Redis restarted" in rec.getMessage()]

    try:
        with caplog.at_level(logging.WARNING, logger="greenq"):
            queue.start()
            queue.submit_job("echo", params={"n": 1})
            wait_until(lambda: len(done) == 1)
            server.kill()
            server.start()  # same port, empty: no persistence
            wait_until(restarts, timeout=30)
            queue.submit_job("echo", params={"n": 2})
            wait_until(lambda: len(done) == 2, timeout=30)
        assert len(restarts()) == 1
        # the outage itself is the one error event
        assert len([e for e in errors if "unreachable" in str(e)]) == 1
    finally:
        queue.shutdown(timeout=10)
        server.close()


def test_greenq_run_with_children_warns_about_the_lua_flaw_once_and_not_again_per_restart(
        redis_server, namespace, tmp_path):
    # The session's redis-server decides whether the warning is due (it is
    # for the 7.0.15 of Debian 12 and Ubuntu 24.04); either way only the
    # master may say it, however many children start or restart.
    version = redis_server.client().info("server")["redis_version"]
    expected = 1 if lua_flaw_warning({"redis_version": version}) is not None else 0
    run = GreenqRun(tmp_path, redis_server.url, namespace, "-c", "2", "-w", "2")
    try:
        first = run.wait_ready(2)
        assert run.output().count("CVE-2025-49844") == expected, run.output()
        os.kill(first[0], signal.SIGKILL)
        run.wait_output(f"(pid {first[0]}) died (signal 9)")
        wait_until(lambda: first[0] not in run.wait_ready(2), timeout=30)
        run.send(signal.SIGTERM)
        assert run.wait(30) == 0
        output = run.output()
        assert output.count("CVE-2025-49844") == expected, output
        if expected:
            assert "distribution" in output
    finally:
        run.kill_all()
