"""The fencing-token pattern end to end (issue 13): a task writes to a
second Redis only when greenq.current_job().fencing_token is larger than
the last token written there (tests/tasks/fencing_store.py). A run frozen
with SIGSTOP past its timeout loses its lease; the job runs again in
another process with a larger token and writes; thawed, the old run's
late write is refused by the store, and its late finish fenced by greenq.
Real `greenq run` worker processes, a real second redis-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import TASKS, wait_until
from redis_server import RedisServer

pytestmark = pytest.mark.timeout(120)

TASK_FILE = os.path.join(TASKS, "fencing_store.py")
TASK_ID = "fencing.store"


class Run:
    """One `greenq run` of the fencing task (jobs in its own process)."""

    def __init__(self, tmp_path, url: str, namespace: str) -> None:
        self.out_path = tmp_path / f"greenq-run-{time.monotonic_ns()}.log"
        self._out = open(self.out_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "greenq", "run", TASK_FILE, "--redis-url", url,
             "--namespace", namespace, "-w", "4"], stdout=self._out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)   # a test that failed mid-SIGSTOP
            self.process.kill()
        self.process.wait(10)
        self._out.close()


@pytest.fixture
def store():
    server = RedisServer().start()
    yield server
    server.close()


def witness(path) -> list[tuple[str, int, int, int]]:
    """(what, pid, token, attempt) per line of the task's witness file."""
    try:
        with open(path) as file:
            rows = file.read().splitlines()
    except FileNotFoundError:
        return []
    return [(what, int(pid), int(token), int(attempt))
            for what, pid, token, attempt in (row.split() for row in rows)]


def test_a_frozen_run_resumed_after_its_rerun_wrote_has_its_late_write_refused(
        tmp_path, redis_url, namespace, make_queue, store, r):
    log = tmp_path / "witness.log"
    first = Run(tmp_path, redis_url, namespace)
    second = None
    try:
        q = make_queue()
        job_id = q.submit_job(TASK_ID, retries=1, params={
            "store": store.url, "key": "report:7", "log": str(log), "first": 3.0})
        wait_until(lambda: witness(log), timeout=30)
        [(_, old_pid, old_token, _)] = witness(log)
        assert old_pid == first.process.pid
        first.signal(signal.SIGSTOP)   # frozen before its write
        time.sleep(1.6)                # past the task's 1 s timeout

        second = Run(tmp_path, redis_url, namespace)
        # The job runs again in the second process once a flush took it
        # (this one, or the second process' own).
        wait_until(lambda: q.force_flush_stale_jobs() or
                   q.get_job(job_id).attempts == 2, timeout=30, interval=0.2)
        wait_until(lambda: ("wrote", second.process.pid) in
                   [line[:2] for line in witness(log)], timeout=30)
        new_token = next(t for what, pid, t, _ in witness(log) if what == "wrote")
        assert new_token > old_token
        landed = store.client().hgetall("report:7")
        assert landed == {b"token": str(new_token).encode(),
                          b"value": f"written by pid {second.process.pid} with token "
                                    f"{new_token}".encode()}

        first.signal(signal.SIGCONT)   # the old run wakes up and writes late
        wait_until(lambda: ("refused", old_pid, old_token, 1) in witness(log), timeout=30)
        wait_until(lambda: job_id in first.output() and "lease was taken away" in
                   first.output(), timeout=30)
        assert store.client().hgetall("report:7") == landed   # refused: the rerun's stays
        # Without the token check, the late write would have won:
        assert store.client().get("report:7:unfenced") == \
            f"written by pid {old_pid} with token {old_token}".encode()
        job = q.get_job(job_id)   # greenq fenced the old run's finish too
        assert (job.state, job.result, job.attempts) == ("succeeded", new_token, 2)
        assert [line[0] for line in witness(log)] == ["start", "start", "wrote", "refused"]
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_runs_of_one_resource_in_order_all_write_each_with_a_larger_token(
        tmp_path, redis_url, namespace, make_queue, store):
    """The check refuses only stale runs: jobs of one resource, run one
    after the other by two processes, each find their token larger than the
    last one written, and every write lands."""
    log = tmp_path / "witness.log"
    runs = [Run(tmp_path, redis_url, namespace) for _ in range(2)]
    try:
        q = make_queue()
        ids = q.submit_jobs([{"task_id": TASK_ID, "resource_id": "report:8",
                              "params": {"store": store.url, "key": "report:8", "log": str(log)}}
                             for _ in range(6)])
        wait_until(lambda: all(q.get_job(job_id).state == "succeeded" for job_id in ids),
                   timeout=60)
        lines = witness(log)
        tokens = [token for what, _, token, _ in lines if what == "wrote"]
        assert len(tokens) == 6 and tokens == sorted(tokens) and len(set(tokens)) == 6
        assert "refused" not in [what for what, *_ in lines]
        assert [q.get_job(job_id).result for job_id in ids] == tokens
        assert int(store.client().hget("report:8", "token")) == tokens[-1]
    finally:
        for run in runs:
            run.stop()
