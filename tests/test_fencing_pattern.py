"""The fencing-token pattern end to end (issue 13): a task hands its
current_job().fencing_token to a second store, which refuses a token not
larger than the last one it accepted. A run frozen with SIGSTOP past its
timeout, whose job a stale flush gave to another process, has its late
write refused when it resumes, while the rerun's write stands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import TASKS, wait_until
from redis_server import RedisServer
from test_failures import Recorder, WorkerProcess

STORE_TASK = os.path.join(TASKS, "fencing_store.py")
WITNESS_TASK = os.path.join(TASKS, "fencing_witness.py")
WITNESS_TASK_ID = "fencing.witness"


@pytest.fixture
def store():
    server = RedisServer().start()
    yield server
    server.close()


def test_a_frozen_runs_late_write_is_refused_and_the_reruns_write_stands(
        make_queue, tmp_path, redis_url, namespace, r, store):
    key = namespace + ":fence"
    rescuer = make_queue(STORE_TASK, worker_count=2)
    events = Recorder(rescuer)
    job_id = rescuer.submit_job("fencing.store", retries=1, params={
        "url": redis_url, "store": store.url, "key": key, "seconds": 3.0})
    frozen = WorkerProcess(tmp_path, redis_url, namespace, task=STORE_TASK, workers=1)
    try:
        wait_until(lambda: r.llen(key + ":started") == 1, timeout=20)
        # Frozen, threads included: no heartbeat goes out while it sleeps.
        frozen.process.send_signal(signal.SIGSTOP)
        rescuer.start()  # its stale flush takes the job once the 0.5 s timeout lapsed
        wait_until(lambda: r.llen(key + ":outcomes") == 1, timeout=20)
        frozen.process.send_signal(signal.SIGCONT)
        wait_until(lambda: r.llen(key + ":outcomes") == 2, timeout=20)
        wait_until(lambda: any(e["event"] == "error" for e in frozen.events()), timeout=20)
    finally:
        frozen.process.send_signal(signal.SIGCONT)
        frozen.kill()

    (first_token, first_pid), (second_token, second_pid) = [
        (int(token), int(pid)) for _run, token, pid in
        (line.decode().split() for line in r.lrange(key + ":started", 0, -1))]
    assert first_pid == frozen.process.pid and second_pid == os.getpid()
    assert second_token > first_token
    # The rerun wrote first; the resumed first run came later with a smaller token.
    assert [x.decode() for x in r.lrange(key + ":outcomes", 0, -1)] == [
        f"written {second_token}", f"refused {first_token}"]
    store_client = store.client()
    assert store_client.get(key + ":value") == f"run 2 with token {second_token}".encode()
    assert int(store_client.get(key + ":token")) == second_token
    # greenq fenced its own finish too: the late success changed nothing.
    assert [e["type"] for e in frozen.events() if e["event"] == "error"] == ["LeaseLostError"]
    assert events.ids("job_success") == [job_id] and events.ids("job_retry") == [job_id]
    assert rescuer.get_job(job_id).state == "succeeded"
    assert rescuer.get_job(job_id).fencing_token == second_token


# -- the same, with both runs in `greenq run` processes ------------------------------


class Run:
    """One `greenq run` of the fencing task (jobs in its own process)."""

    def __init__(self, tmp_path, url: str, namespace: str) -> None:
        self.out_path = tmp_path / f"greenq-run-{time.monotonic_ns()}.log"
        self._out = open(self.out_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "greenq", "run", WITNESS_TASK, "--redis-url", url,
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


def witness(path) -> list[tuple[str, int, int, int]]:
    """(what, pid, token, attempt) per line of the task's witness file."""
    try:
        with open(path) as file:
            rows = file.read().splitlines()
    except FileNotFoundError:
        return []
    return [(what, int(pid), int(token), int(attempt))
            for what, pid, token, attempt in (row.split() for row in rows)]


def test_between_two_greenq_run_processes_the_stale_write_is_refused_where_an_unfenced_one_wins(
        tmp_path, redis_url, namespace, make_queue, store, r):
    """Both runs in `greenq run` processes, the first frozen before its
    write past the task's 1 s timeout, the second started only then. The
    same value also goes to the store without the check: there the stale
    run's late write wins, which is what the token check prevents."""
    log = tmp_path / "witness.log"
    first = Run(tmp_path, redis_url, namespace)
    second = None
    try:
        q = make_queue()
        job_id = q.submit_job(WITNESS_TASK_ID, retries=1, params={
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
        ids = q.submit_jobs([{"task_id": WITNESS_TASK_ID, "resource_id": "report:8",
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
