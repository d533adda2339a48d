"""Embedding greenq in a program: a `start()` without gevent's
monkey-patching fails at once with a clear error and leaves nothing behind;
a Redis whose maxmemory-policy may evict job records is warned about at
start (and the queue still works)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import TASKS, wait_until
from greenq import GreenQueue
from redis_server import RedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOG_TASK = os.path.join(TASKS, "fault_scale_log.py")


def run_plain_python(script: str, **values) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter that gevent has not patched."""
    env = {k: v for k, v in os.environ.items() if k not in ("GREENQ_REDIS_URL", "REDIS_URL")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    preamble = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    return subprocess.run([sys.executable, "-c", preamble + textwrap.dedent(script)],
                          env=env, capture_output=True, text=True, timeout=60)


# -- start() without monkey-patching ---------------------------------------------------

UNPATCHED_START = """
import atexit, json, os, sys
import gevent.monkey
from greenq import GreenQueue

assert not gevent.monkey.is_module_patched("socket")


def children():
    # Processes whose parent is this one, read from /proc.
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.append(int(entry))
    return found


atexit.register(lambda: sys.stdout.write(json.dumps({"children": children()}) + "\\n"))
q = GreenQueue(redis_url=URL, namespace=NS, child_process_count=CHILDREN, worker_count=4)
q.register_task(TASK)
q.start()  # not caught: the program ends on the error, as an embedding program would
print("started")
"""


@pytest.mark.parametrize("children", [0, 2], ids=["in-process workers", "child processes"])
def test_start_without_monkey_patching_ends_the_program_with_a_clear_error_and_writes_nothing(
        redis_url, namespace, r, children):
    result = run_plain_python(UNPATCHED_START, URL=redis_url, NS=namespace, TASK=LOG_TASK,
                              CHILDREN=children)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "started" not in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("greenq.errors.NotPatchedError: ")
    assert "gevent.monkey.patch_all()" in last and "start()" in last
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"children": []}
    assert list(r.scan_iter(match=namespace + ":*")) == []


# -- maxmemory-policy ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def evicting_server():
    server = RedisServer(extra_args=("--maxmemory-policy", "allkeys-lru")).start()
    yield server
    server.close()


def policy_warnings(caplog) -> list[str]:
    return [rec.getMessage() for rec in caplog.records
            if rec.levelno == logging.WARNING and rec.name.startswith("greenq")
            and "maxmemory-policy" in rec.getMessage()]


def run_one_job(make_queue, url: str, path: str, key: str) -> None:
    queue = make_queue("fault_scale_log", redis_url=url)
    done = []
    queue.on("job_success", done.append)
    queue.start()
    queue.submit_job("fault.scale.log", resource_id=key, params={"k": key, "s": 0, "log": path})
    wait_until(lambda: done, timeout=15)
    queue.shutdown()


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "allkeys-lfu", "volatile-ttl",
                                    "allkeys-random"])
def test_start_warns_when_redis_may_evict_job_records_and_the_queue_still_works(
        make_queue, evicting_server, caplog, tmp_path, policy):
    raw = evicting_server.client()
    try:
        raw.config_set("maxmemory-policy", policy)
        caplog.set_level(logging.WARNING, logger="greenq")
        path = str(tmp_path / "runs.log")
        run_one_job(make_queue, evicting_server.url, path, policy)
        (warning,) = policy_warnings(caplog)
        assert policy in warning and "noeviction" in warning
        with open(path) as f:
            assert f.read().splitlines() == [f"S {policy} 0", f"E {policy} 0"]
    finally:
        raw.config_set("maxmemory-policy", "allkeys-lru")
        raw.close()


def test_start_does_not_warn_under_noeviction(make_queue, redis_server, caplog, tmp_path):
    raw = redis_server.client()
    old = raw.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        raw.config_set("maxmemory-policy", "noeviction")
        caplog.set_level(logging.WARNING, logger="greenq")
        path = str(tmp_path / "runs.log")
        run_one_job(make_queue, redis_server.url, path, "quiet")
        assert policy_warnings(caplog) == []
        with open(path) as f:
            assert f.read().splitlines() == ["S quiet 0", "E quiet 0"]
    finally:
        raw.config_set("maxmemory-policy", old)
        raw.close()


def test_greenq_run_with_child_processes_warns_about_an_evicting_redis_on_stderr(
        evicting_server, namespace, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GREENQ_REDIS_URL", "REDIS_URL")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    path = str(tmp_path / "runs.log")
    stderr_path = tmp_path / "stderr"
    submitter = GreenQueue(redis_url=evicting_server.url, namespace=namespace)
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "greenq", "run", LOG_TASK, "-c", "2", "-w", "2",
             "--redis-url", evicting_server.url, "--namespace", namespace],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        submitter.submit_job("fault.scale.log", params={"k": "cli", "s": 0, "log": path})
        wait_until(lambda: os.path.exists(path) and "E cli 0" in open(path).read(), timeout=30)
    finally:
        process.terminate()
        status = process.wait(30)
        submitter.shutdown()
    text = stderr_path.read_text()
    assert status == 0, text
    assert "maxmemory-policy is allkeys-lru" in text and "noeviction" in text
