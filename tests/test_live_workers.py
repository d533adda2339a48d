"""Is anybody working? The registry of live worker processes, seen through
`greenq inspect` and `stats()["workers"]`, with real `greenq run`
processes: idle ones are listed, a SIGKILLed child drops out within
PROCESS_GONE_AFTER, a clean stop leaves none."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import TASKS, wait_until
from greenq.config import PROCESS_GONE_AFTER
from faults.sidelog import GreenqRun

GREENQ = [sys.executable, "-m", "greenq"]


@pytest.fixture
def runs(tmp_path, redis_url, namespace):
    started: list[GreenqRun] = []

    def start(task: str, *options: str) -> GreenqRun:
        run = GreenqRun(tmp_path, redis_url, namespace, *options,
                        task_file=os.path.join(TASKS, task))
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill_all()


@pytest.fixture
def inspect(redis_url, namespace):
    def call(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(GREENQ + ["inspect", *args, "--redis-url", redis_url,
                                          "--namespace", namespace],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result
    return call


def stop(run: GreenqRun) -> None:
    run.send(signal.SIGTERM)
    assert run.wait(30) == 0, run.output()


def live_pids(inspect) -> list[int]:
    return sorted(p["pid"] for p in json.loads(inspect("--json").stdout)["processes"])


def test_an_idle_greenq_run_with_two_children_shows_two_live_workers_in_inspect_and_stats(
        runs, inspect, make_queue):
    run = runs("proc_outcome.py", "-c", "2", "-w", "3")
    children = run.wait_ready(2)
    queue = make_queue()

    wait_until(lambda: queue.stats()["workers"] == 2, timeout=10)
    report = json.loads(inspect("--json").stdout)
    text = inspect().stdout.splitlines()

    processes = report["processes"]
    assert sorted(p["pid"] for p in processes) == children
    assert sorted(p["index"] for p in processes) == [1, 2]
    for proc in processes:
        assert (proc["host"], proc["role"], proc["master"], proc["busy"], proc["capacity"]) == \
            (socket.gethostname(), "child", run.pid, 0, 3)
        assert 0 <= proc["last_heartbeat"] < PROCESS_GONE_AFTER
        assert 0 <= proc["age"] < 60 and proc["started"] > 1e9
        assert proc["id"].startswith(f"{socket.gethostname()}:{proc['pid']}:")
    assert report["running"] == [] and report["locked"] == []
    assert text[0] == f"worker processes (2 live, heard from within {PROCESS_GONE_AFTER:g}s):"
    for line, proc in zip(text[1:3], processes):
        assert line.split()[:7] == [proc["host"], "pid", str(proc["pid"]), "child",
                                    str(proc["index"]), "of", "master"]
        assert f"master {run.pid}  busy=0/3  heartbeat=" in line
    assert text[3] == "running jobs (0 shown):"
    stop(run)


def test_a_sigkilled_child_drops_out_of_the_live_workers_within_the_documented_time(
        runs, inspect, make_queue):
    run = runs("proc_outcome.py", "-c", "2", "-w", "3")
    victim, survivor = run.wait_ready(2)
    queue = make_queue()
    wait_until(lambda: live_pids(inspect) == [victim, survivor], timeout=10)

    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: victim not in live_pids(inspect), timeout=PROCESS_GONE_AFTER + 10,
               interval=0.1)
    took = time.monotonic() - killed

    # Listed until its last heartbeat is PROCESS_GONE_AFTER old, not longer
    # (a heartbeat is at most a tick, 1 s, old when it dies).
    assert took < PROCESS_GONE_AFTER + 3
    [replacement] = set(run.wait_ready(2)) - {survivor}
    wait_until(lambda: live_pids(inspect) == sorted([survivor, replacement]), timeout=10)
    assert queue.stats()["workers"] == 2
    stop(run)


def test_after_a_clean_stop_no_worker_is_live_and_the_registry_is_empty(
        runs, inspect, make_queue, r, namespace):
    run = runs("proc_outcome.py", "-c", "2", "-w", "3")
    run.wait_ready(2)
    queue = make_queue()
    wait_until(lambda: queue.stats()["workers"] == 2, timeout=10)

    stop(run)

    assert queue.stats()["workers"] == 0
    assert json.loads(inspect("--json").stdout)["processes"] == []
    prefix = f"{namespace}:{{default}}:"
    assert r.exists(prefix + "workers", prefix + "alive") == 0


def test_an_in_process_worker_is_listed_with_the_jobs_it_runs_as_busy(
        runs, inspect, make_queue, r, redis_url, namespace):
    run = runs("proc_sleep.py", "-w", "4")
    queue = make_queue()
    wait_until(lambda: queue.stats()["workers"] == 1, timeout=30)
    key = namespace + ":rec"
    queue.submit_job("proc.sleep", params={"url": redis_url, "key": key, "n": 1, "first": 60})
    wait_until(lambda: r.llen(key + ":started") == 1, timeout=30)

    [proc] = json.loads(inspect("--json").stdout)["processes"]

    assert (proc["pid"], proc["role"], proc["busy"], proc["capacity"]) == (run.pid, "worker", 1, 4)
    assert "index" not in proc and "master" not in proc
    line = inspect().stdout.splitlines()[1]
    assert line.startswith(f"  {socket.gethostname()} pid {run.pid}  worker  busy=1/4  heartbeat=")
