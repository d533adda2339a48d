"""The fencing-token pattern end to end (issue 13): a task hands its
current_job().fencing_token to a second store, which refuses a token not
larger than the last one it accepted. A run frozen with SIGSTOP past its
timeout, whose job a stale flush gave to another process, has its late
write refused when it resumes, while the rerun's write stands."""

from __future__ import annotations

import os
import signal

import pytest

from conftest import TASKS, wait_until
from redis_server import RedisServer
from test_failures import Recorder, WorkerProcess

STORE_TASK = os.path.join(TASKS, "fencing_store.py")


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
