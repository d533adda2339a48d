"""Races (issue 4, item 8): finish against stale flush, many processes
flushing at once, a failed-queue retry against a running job of the same
resource, a connection pool far smaller than the worker count, a socket
timeout shorter than the fetcher's blocking wait, a re-sent submit, and a
job record deleted while its job holds a resource.
Real processes and real redis-servers; every test checks Redis and the
side-effect log of tests/tasks/fault_log_sleep.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import gevent
import gevent.event
import pytest
import redis
from gevent import socket
from gevent.server import StreamServer

from conftest import wait_until
import greenq
from greenq import GreenQueue
from greenq.job import FETCH_ROW
from greenq.queue import new_job_id
from redis_server import RedisServer
from queue_state import assert_queue_empty, unfinished, unfinished_records
from sidelog import (ROOT, TASK_FILE, TASK_ID, EventWorker, GreenqRun, SideLog,
                     redis_connections_by_pid)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def side(tmp_path):
    return SideLog(tmp_path / "side.log")


@pytest.fixture
def prefix(namespace):
    return f"{namespace}:{{default}}:"


def job(side, n, resource=None, retries=0, **params):
    return {"task_id": TASK_ID, "resource_id": resource, "retries": retries,
            "params": side.params(n, **params)}


# A process that waits for the file `go` to appear, then calls
# force_flush_stale_jobs() for `seconds`, and writes the ids it reclaimed.
FLUSHER = r'''
import json, os, sys, time
import greenq
from greenq import GreenQueue

url, ns, go, out, seconds = sys.argv[1:6]
q = GreenQueue(redis_url=url, namespace=ns)
reclaimed = []
q.on("job_retry", lambda job: reclaimed.append(job.id))
q.on("job_fail", lambda job: reclaimed.append(job.id))
q.stats()  # connected before the start
with open(out + ".ready", "w"):
    pass
while not os.path.exists(go):
    time.sleep(0.001)
counted = 0
end = time.monotonic() + float(seconds)
while True:
    counted += q.force_flush_stale_jobs()
    if time.monotonic() > end:
        break
with open(out, "w") as file:
    json.dump({"ids": reclaimed, "count": counted}, file)
'''


class Flushers:
    """`count` FLUSHER processes, started and connected, waiting for go()."""

    def __init__(self, tmp_path, url: str, namespace: str, count: int, seconds: float) -> None:
        self.go_path = tmp_path / "go"
        self.outs = [tmp_path / f"flusher-{i}.json" for i in range(count)]
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.processes = [subprocess.Popen(
            [sys.executable, "-c", FLUSHER, url, namespace, str(self.go_path), str(out), str(seconds)],
            env=env) for out in self.outs]
        wait_until(lambda: all(os.path.exists(str(out) + ".ready") for out in self.outs), timeout=30)

    def go(self) -> None:
        self.go_path.touch()

    def results(self) -> list[dict]:
        for process in self.processes:
            assert process.wait(30) == 0
        return [json.loads(out.read_text()) for out in self.outs]

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)


# -- finish against stale flush ---------------------------------------------------------


def test_a_finish_racing_stale_flushes_from_several_processes_has_exactly_one_winner_per_job(
        tmp_path, redis_url, namespace, make_queue, side, r, prefix):
    """A worker frozen past its jobs' timeout is thawed at the moment three
    other processes start flushing: for each job either the worker's finish
    wins (one success, one run) or a flush does (the finish is fenced and
    reported, the job is retried and runs once more) - never both. (Which
    side wins is up to the scheduler; on a quiet machine the thawed worker
    usually does. The script-level race below mixes both outcomes.)"""
    worker = EventWorker(tmp_path, redis_url, namespace, workers=10)
    flushers = None
    try:
        wait_until(lambda: worker.events("started"), timeout=30)
        admin = make_queue()
        ids = admin.submit_jobs([job(side, n, f"r{n}", retries=1, first=1.2 + 0.02 * n, seconds=0.05)
                                 for n in range(10)])
        wait_until(lambda: len(side.count("start")) == 10, timeout=30)
        flushers = Flushers(tmp_path, redis_url, namespace, count=3, seconds=0.5)
        worker.process.send_signal(signal.SIGSTOP)
        time.sleep(1.6)  # past the 1 s timeout, and past the end of every job's sleep

        flushers.go()
        worker.process.send_signal(signal.SIGCONT)
        results = flushers.results()

        flushed = [job_id for result in results for job_id in result["ids"]]
        assert sum(result["count"] for result in results) == len(flushed)
        # The first runs' outcomes; a reclaimed job's rerun (attempt 2) may
        # succeed in this same worker soon after, and is no finish's win.
        def first_run_successes():
            return {e["id"] for e in worker.events("job_success") if e["attempts"] == 1}

        wait_until(lambda: len(first_run_successes()) + len(worker.events("error")) >= 10,
                   timeout=20)
        own_flush = [e["id"] for e in worker.events("job_retry")]
        reclaimed = Counter(flushed + own_flush)
        assert all(count == 1 for count in reclaimed.values()), reclaimed   # flushed at most once
        won_by_finish = first_run_successes() & set(ids)
        assert not won_by_finish & set(reclaimed)
        assert won_by_finish | set(reclaimed) == set(ids)
        fenced = {job_id for job_id in ids
                  if any(job_id in e["text"] for e in worker.events("error")
                         if e["type"] == "LeaseLostError")}
        assert fenced == set(reclaimed)
        # The reclaimed jobs run once more (here, or in the thawed worker).
        wait_until(lambda: sum(side.count("end").values()) == 10 + len(reclaimed), timeout=30)
        for n, job_id in enumerate(ids):
            runs = 2 if job_id in reclaimed else 1
            assert (side.count("start")[n], side.count("end")[n]) == (runs, runs), side.dump()
        print(f"finish won {len(won_by_finish)}, flush won {len(reclaimed)} of 10")
        wait_until(lambda: not unfinished_records(r, prefix), timeout=20)
        assert_queue_empty(r, prefix)
    finally:
        if flushers is not None:
            flushers.kill()
        worker.kill()


# A process that waits for `go`, then finishes the given (job id, lease
# token) pairs one script call each, as the process `proc` holding them.
COMPLETER = r'''
import json, os, sys, time
import greenq
from greenq import GreenQueue

url, ns, go, out, proc, pairs = sys.argv[1:7]
q = GreenQueue(redis_url=url, namespace=ns)
q.stats()
with open(out + ".ready", "w"):
    pass
while not os.path.exists(go):
    time.sleep(0.001)
codes = {job_id: q.broker.complete(proc, [job_id, token])[0] for job_id, token in json.loads(pairs)}
with open(out, "w") as file:
    json.dump(codes, file)
'''


def test_finishes_interleaved_with_flushes_from_other_processes_leave_each_job_to_exactly_one(
        tmp_path, redis_url, namespace, make_queue, side, r, prefix):
    """The scripts themselves raced: two processes finish the jobs a stale
    process holds, one call each, while two others flush. Each job is
    either finished (gone, never run again) or flushed (retried, and run by
    the next worker), never both; the counters stay true."""
    admin = make_queue()
    ids = admin.submit_jobs([job(side, n, f"r{n}", retries=1) for n in range(300)])
    rows, _ = admin.broker.fetch(admin.broker.shared, "stale:1", 300, 100, [TASK_ID, 100])
    pairs = [(rows[i].decode(), str(rows[i + 1])) for i in range(0, len(rows), FETCH_ROW)]
    assert sorted(job_id for job_id, _ in pairs) == sorted(ids)
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    outs = [tmp_path / f"completer-{i}.json" for i in range(2)]
    completers = [subprocess.Popen(
        [sys.executable, "-c", COMPLETER, redis_url, namespace, str(tmp_path / "go"), str(out),
         "stale:1", json.dumps(pairs[i::2])], env=env) for i, out in enumerate(outs)]
    flushers = None
    try:
        flushers = Flushers(tmp_path, redis_url, namespace, count=2, seconds=0.3)
        wait_until(lambda: all(os.path.exists(str(out) + ".ready") for out in outs), timeout=30)
        time.sleep(0.2)  # past the 100 ms timeout: every job is stale

        flushers.go()
        results = flushers.results()
        for process in completers:
            assert process.wait(30) == 0
    finally:
        if flushers is not None:
            flushers.kill()
        for process in completers:
            if process.poll() is None:
                process.kill()

    codes = {}
    for out in outs:
        codes.update(json.loads(out.read_text()))
    flushed = Counter(job_id for result in results for job_id in result["ids"])
    finished = {job_id for job_id, code in codes.items() if code == 1}
    assert set(codes.values()) <= {1, -1}
    assert all(count == 1 for count in flushed.values())
    assert set(flushed) == {job_id for job_id, code in codes.items() if code == -1}
    assert finished | set(flushed) == set(ids) and not finished & set(flushed)
    print(f"finished {len(finished)}, flushed {len(flushed)} of 300")
    number = {job_id: n for n, job_id in enumerate(ids)}
    for job_id in finished:
        assert not unfinished(r, prefix + f"job:{job_id}")
        assert not r.hexists(prefix + "locks", f"r{number[job_id]}")
    for job_id in flushed:
        assert r.hmget(prefix + f"job:{job_id}", "state", "retries") == [b"pending", b"0"]
    assert int(r.hget(prefix + "counts", "active")) == 0
    assert Counter(r.lrange(prefix + "pending", 0, -1)) == Counter(i.encode() for i in flushed)

    worker = make_queue(TASK_FILE, worker_count=50)
    worker.start()
    wait_until(lambda: len(side.count("end")) == len(flushed), timeout=30)
    side.assert_each_ended_once(sorted(number[job_id] for job_id in flushed))
    wait_until(lambda: not unfinished_records(r, prefix), timeout=10)
    assert_queue_empty(r, prefix)


def test_many_processes_flushing_at_once_reclaim_each_stale_job_exactly_once(
        tmp_path, redis_url, namespace, make_queue, side, r, prefix):
    admin = make_queue()
    resources = {n: f"r{n % 100}" for n in range(200)}
    ids = admin.submit_jobs([job(side, n, resources[n], retries=2) for n in range(200)])
    holders = ids[:100]
    # A process that leases the 100 runnable jobs (one per resource), then dies.
    rows, _ = admin.broker.fetch(admin.broker.shared, "ghost:1", 200, 100, [TASK_ID, 100])
    assert len(rows) == 100 * FETCH_ROW
    flushers = Flushers(tmp_path, redis_url, namespace, count=4, seconds=0.3)
    try:
        time.sleep(0.2)  # past the ghost's 100 ms timeout

        flushers.go()
        results = flushers.results()
    finally:
        flushers.kill()

    flushed = Counter(job_id for result in results for job_id in result["ids"])
    assert sum(result["count"] for result in results) == 100
    assert flushed == Counter(holders)                      # each once, by exactly one process
    assert Counter(r.lrange(prefix + "pending", 0, -1)) == Counter(i.encode() for i in holders)
    for job_id in holders:
        record = r.hgetall(prefix + f"job:{job_id}")
        assert (record[b"state"], record[b"retries"], record[b"attempts"]) == (b"pending", b"1", b"1")
        assert r.hget(prefix + "locks", resources[ids.index(job_id)]) == job_id.encode()
    assert int(r.hget(prefix + "counts", "active")) == 0
    assert int(r.hget(prefix + "counts", "waiting")) == 100
    assert side.entries() == []                             # the ghost never ran them

    worker = make_queue(TASK_FILE, worker_count=50)
    worker.start()
    wait_until(lambda: len(side.count("end")) == 200, timeout=60)
    side.assert_each_ended_once(range(200))
    side.assert_one_at_a_time(resources)
    wait_until(lambda: not unfinished_records(r, prefix), timeout=10)
    assert_queue_empty(r, prefix)


# -- the failed queue against a running job ---------------------------------------------


def test_a_failed_job_retried_while_its_resource_runs_another_job_waits_and_runs_after_it(
        make_queue, side, r, prefix):
    queue = make_queue(TASK_FILE, worker_count=4, flush_stale_timeout=0.2)
    queue.start()
    first = queue.submit_job(TASK_ID, resource_id="x", params=side.params(0, fail_first=True))
    wait_until(lambda: r.llen(prefix + "failed") == 1, timeout=20)
    holder = queue.submit_job(TASK_ID, resource_id="x", params=side.params(1, seconds=1.5))
    wait_until(lambda: side.count("start")[1] == 1, timeout=20)

    assert queue.retry_failed_jobs() == 1

    # Behind the running holder, not beside it.
    assert r.hget(prefix + "locks", "x") == holder.encode()
    assert r.lrange(prefix + "wait:x", 0, -1) == [first.encode()]
    assert r.hget(prefix + f"job:{first}", "state") == b"waiting"
    assert r.llen(prefix + "pending") == 0
    queue.submit_job(TASK_ID, resource_id="x", params=side.params(2))
    wait_until(lambda: set(side.count("end")) == {0, 1, 2}, timeout=30)

    entries = [(e.n, e.what) for e in side.entries()]
    assert entries == [(0, "start"), (0, "fail"), (1, "start"), (1, "end"),
                       (0, "start"), (0, "end"), (2, "start"), (2, "end")]
    wait_until(lambda: not unfinished_records(r, prefix), timeout=10)
    assert_queue_empty(r, prefix)


# -- connections ------------------------------------------------------------------------


def test_five_hundred_workers_per_child_share_a_few_connections_and_every_job_runs_once(
        tmp_path, redis_url, namespace, make_queue, side, r, prefix):
    run = GreenqRun(tmp_path, redis_url, namespace, "-c", "2", "-w", "500")
    try:
        children = run.wait_ready(2)
        processes = [run.pid, *children]
        jobs = 1500
        make_queue().submit_jobs([job(side, n, seconds=0.4) for n in range(jobs)])
        peak = {pid: 0 for pid in processes}

        def sample():
            for pid, count in redis_connections_by_pid(r, processes).items():
                peak[pid] = max(peak[pid], count)
            return len(side.count("end")) == jobs
        wait_until(sample, timeout=90, interval=0.1)

        side.assert_each_ended_once(range(jobs))
        assert side.max_concurrency() >= 200          # many jobs ran at once...
        assert all(peak[pid] >= 1 for pid in children), (peak, run.output()[-2000:])
        assert max(peak.values()) <= 6, peak          # ...on at most 6 connections a process
        assert_queue_empty(r, prefix)
        run.send(signal.SIGTERM)
        assert run.wait(30) == 0
    finally:
        run.kill_all()


# -- a socket timeout shorter than the fetcher's blocking wait -----------------------------


def test_a_socket_timeout_shorter_than_the_blocking_fetch_neither_breaks_jobs_nor_cries_wolf(side):
    """redis_config with socket_timeout 0.3 s, under greenq's 1 s BLMOVE: an
    idle worker must not report Redis as unreachable (it is not), and jobs
    submitted later still run."""
    from greenq import config

    assert 0.3 < config.FETCH_BLOCK_SECONDS
    server = RedisServer().start()
    queue = None
    try:
        queue = GreenQueue(redis_config={"host": "127.0.0.1", "port": server.port,
                                         "socket_timeout": 0.3},
                           namespace="sto", worker_count=2, flush_stale_timeout=0.2)
        queue.register_task(TASK_FILE)
        errors = []
        queue.on("error", errors.append)
        queue.start()
        time.sleep(3 * config.FETCH_BLOCK_SECONDS)   # idle: the fetcher waits in BLMOVE
        idle_errors = list(errors)
        ids = queue.submit_jobs([job(side, n, seconds=0.1) for n in range(3)])
        wait_until(lambda: len(side.count("end")) == 3, timeout=20)

        side.assert_each_ended_once(range(3))
        assert ids
        assert idle_errors == [], (
            f"{len(idle_errors)} error events while Redis was fine and the worker idle: "
            f"{idle_errors[:2]}")
    finally:
        if queue is not None:
            queue.shutdown(timeout=5)
        server.close()


# -- a re-sent submit --------------------------------------------------------------------


def test_a_submit_script_sent_twice_with_the_same_ids_adds_each_job_once(make_queue, side, r, prefix):
    queue = make_queue(TASK_FILE, worker_count=4)
    serializer = queue.serializer

    def row(n, resource):
        return [new_job_id(), TASK_ID, resource, serializer.tag,
                serializer.encode(side.params(n), queue.max_params_bytes), 0, "0"]
    rows = [row(0, "x"), row(1, "x"), row(2, "")]   # a holder, a waiter, an unlocked job

    assert queue.broker.submit(rows) == 3
    assert queue.broker.submit(rows) == 0            # the re-send adds nothing

    assert Counter(r.lrange(prefix + "pending", 0, -1)) == Counter([rows[0][0].encode(),
                                                                    rows[2][0].encode()])
    assert r.lrange(prefix + "wait:x", 0, -1) == [rows[1][0].encode()]
    assert int(r.hget(prefix + "counts", "waiting")) == 1
    queue.start()
    wait_until(lambda: len(side.count("end")) == 3, timeout=20)
    side.assert_each_ended_once(range(3))


def test_a_submit_whose_reply_timed_out_landed_once_and_its_re_send_adds_nothing(side, tmp_path):
    """Redis busy (DEBUG SLEEP) past the client's socket timeout: submit
    raises (greenq does not re-send by itself, and redis-py's retries are
    off), the script runs once when Redis gets to it, and re-sending the
    same row - what an automatic retry would do - adds nothing."""
    from gevent import monkey

    server = RedisServer(extra_args=("--enable-debug-command", "yes")).start()
    queue = worker = None
    try:
        queue = GreenQueue(redis_config={"host": "127.0.0.1", "port": server.port,
                                         "socket_timeout": 0.3}, namespace="resend")
        queue.broker.load_scripts()
        with queue.broker.lanes.borrow() as channel:  # submits' connection made before
            channel.execute([("PING",)])               # Redis is made busy
        admin = server.client()
        calls_before = admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        serializer = queue.serializer
        row = [new_job_id(), TASK_ID, "x", serializer.tag,
               serializer.encode(side.params(0), queue.max_params_bytes), 0, "0"]
        # DEBUG SLEEP blocks its caller too: a native thread, its own client.
        sleeper = server.client(socket_timeout=10)
        thread = monkey.get_original("threading", "Thread")(
            target=lambda: sleeper.execute_command("DEBUG", "SLEEP", 1.0), daemon=True)
        thread.start()
        time.sleep(0.2)

        with pytest.raises(redis.TimeoutError):
            queue.broker.submit([row])

        prefix = queue.keys.prefix
        wait_until(lambda: admin.exists(prefix + f"job:{row[0]}"), timeout=10)
        calls = admin.info("commandstats")["cmdstat_evalsha"]["calls"] - calls_before
        assert calls == 1, f"the submit script was sent {calls} times"
        assert queue.broker.submit([row]) == 0
        assert admin.lrange(prefix + "pending", 0, -1) == [row[0].encode()]
        assert admin.hget(prefix + "locks", "x") == row[0].encode()

        worker = GreenQueue(redis_url=server.url, namespace="resend", worker_count=2)
        worker.register_task(TASK_FILE)
        worker.start()
        wait_until(lambda: side.count("end")[0] == 1, timeout=20)
        side.assert_each_ended_once([0])
        wait_until(lambda: not unfinished_records(admin, prefix), timeout=10)
        assert_queue_empty(admin, prefix)
    finally:
        for q in (worker, queue):
            if q is not None:
                q.shutdown(timeout=5)
        server.close()


class ReplyCutter:
    """A TCP proxy in front of a redis-server that loses one reply: once
    armed with a byte string, it passes the next request containing it to
    Redis, and when Redis answers, closes the client's connection instead
    of passing the answer on (the request ran; the client sees a broken
    connection). It then holds every new connection, unconnected, until
    let_through()."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self._needle: bytes | None = None
        self.cut = gevent.event.Event()
        self._gate = gevent.event.Event()
        self._gate.set()
        self.sent_after_cut = 0   # requests with the needle Redis got after the cut
        self._watch = b""
        self._server = StreamServer(("127.0.0.1", 0), self._serve)
        self._server.start()
        self.url = f"redis://127.0.0.1:{self._server.server_port}/0"

    def arm(self, needle: bytes) -> None:
        self._needle = self._watch = needle

    def let_through(self) -> None:
        self._gate.set()

    def close(self) -> None:
        self._gate.set()
        self._server.stop()

    def _serve(self, client, _address) -> None:
        self._gate.wait()
        upstream = socket.create_connection(("127.0.0.1", self.redis_port))
        cutting = []

        def replies():
            try:
                while data := upstream.recv(65536):
                    if cutting:           # Redis ran it and answered: lose the answer
                        self.cut.set()
                        break
                    client.sendall(data)
            except OSError:
                pass
            client.close()
            upstream.close()

        pump = gevent.spawn(replies)
        try:
            while data := client.recv(65536):
                if self._needle is not None and self._needle in data:
                    self._needle = None
                    self._gate.clear()
                    cutting.append(True)
                elif self.cut.is_set() and self._watch in data:
                    self.sent_after_cut += 1
                upstream.sendall(data)
        except OSError:
            pass
        pump.join()


def test_a_submit_re_sent_after_a_lost_reply_adds_nothing_though_its_job_already_ran(
        redis_server, make_queue, side, r, prefix):
    """The submit runs, its reply is lost (the connection breaks), an idle
    worker runs and completes the job, then the channel re-sends the submit
    on a new connection, as it does for a broken connection. The job must
    not run a second time."""
    cutter = ReplyCutter(redis_server.port)
    try:
        worker = make_queue(TASK_FILE, worker_count=1)
        worker.start()
        submitter = make_queue(redis_url=cutter.url)
        submitter.submit_job(TASK_ID, params=side.params(0))   # its channel has served a call
        wait_until(lambda: side.count("end")[0] == 1, timeout=20)

        cutter.arm(submitter.broker.scripts["submit"].sha.encode())
        sending = gevent.spawn(submitter.submit_job, TASK_ID, params=side.params(1))
        assert cutter.cut.wait(timeout=10)
        wait_until(lambda: side.count("end")[1] == 1 and not unfinished_records(r, prefix), timeout=20)
        cutter.let_through()                 # the re-send's connection goes through
        job_id = sending.get(timeout=20)
        assert cutter.sent_after_cut == 1    # the submit did reach Redis a second time

        # A run of the re-sent job would come before this one (one worker, FIFO).
        submitter.submit_job(TASK_ID, params=side.params(2))
        wait_until(lambda: side.count("end")[2] == 1, timeout=20)
        side.assert_each_ended_once([0, 1, 2])
        assert not unfinished(r, prefix + f"job:{job_id}")
        assert_queue_empty(r, prefix)
    finally:
        cutter.close()


FINISH_TASK = '''
import time
id = "race.finish"
timeout = 30.0

def perform(params):
    time.sleep(params["s"])
    if params["fail"]:
        raise RuntimeError("boom")
'''


@pytest.mark.parametrize("outcome", ["success", "retry", "fail"])
def test_a_finish_whose_reply_timed_out_is_sent_again_and_reported_once_with_its_first_outcome(
        tmp_path, outcome):
    """Redis busy (DEBUG SLEEP) past the worker's socket timeout just as a
    job finishes: the committer's round trip times out, Redis runs the
    finish when it gets to it, and the committer sends it again. The receipt
    the first send left makes the re-send report that outcome once:
    job_success, or job_retry / job_fail for a failed run (a retried job's
    record is pending again, so without the receipt its re-send looked like
    a lost lease and the job_retry went missing)."""
    from gevent import monkey

    task_file = tmp_path / "race_finish.py"
    task_file.write_text(FINISH_TASK)
    server = RedisServer(extra_args=("--enable-debug-command", "yes")).start()
    worker = None
    try:
        worker = GreenQueue(redis_config={"host": "127.0.0.1", "port": server.port,
                                          "socket_timeout": 0.3}, namespace="refinish",
                            worker_count=2)
        worker.register_task(str(task_file))
        events: dict[str, list] = {name: [] for name in ("job_success", "job_retry", "job_fail",
                                                         "error")}
        for name, seen in events.items():
            worker.on(name, seen.append)
        worker.start()
        admin = server.client()
        job_id = worker.submit_job("race.finish", params={"s": 0.6, "fail": outcome != "success"},
                                   retries=1 if outcome == "retry" else 0)
        wait_until(lambda: admin.hget(worker.keys.job(job_id), "state") == b"active", timeout=10)
        # The job ends at ~0.6 s, inside this 1.5 s sleep; DEBUG SLEEP blocks
        # its caller too: a native thread with its own client.
        sleeper = server.client(socket_timeout=10)
        thread = monkey.get_original("threading", "Thread")(
            target=lambda: sleeper.execute_command("DEBUG", "SLEEP", 1.5), daemon=True)
        thread.start()

        expected = {"success": "job_success", "retry": "job_retry", "fail": "job_fail"}[outcome]
        wait_until(lambda: events[expected], timeout=20)
        if outcome == "retry":  # its second run (no sleep in Redis now) fails for good
            wait_until(lambda: events["job_fail"], timeout=20)
        time.sleep(0.5)  # room for a wrong second report
        assert [job.id for job in events[expected]] == [job_id]
        others = {name: seen for name, seen in events.items()
                  if name not in (expected, "error") and not (outcome == "retry" and name == "job_fail")}
        assert all(not seen for seen in others.values()), others
        assert not [e for e in events["error"] if isinstance(e, greenq.LeaseLostError)], events["error"]
        assert any(isinstance(e, greenq.BrokerError) for e in events["error"]), \
            "the finish's round trip was expected to time out"
        if outcome == "success":
            assert not unfinished(admin, worker.keys.job(job_id))
        else:
            assert admin.lrange(worker.keys.failed, 0, -1) == [job_id.encode()]
    finally:
        if worker is not None:
            worker.shutdown(timeout=5)
        server.close()


# -- a record deleted while its job holds a resource ------------------------------------


def test_a_job_waiting_behind_a_holder_whose_record_was_deleted_runs_and_the_loss_is_reported(
        make_queue, side, r, prefix):
    admin = make_queue()
    holder, waiter = admin.submit_jobs([job(side, 0, "x"), job(side, 1, "x")])
    r.delete(prefix + f"job:{holder}")   # eviction, or an operator's DEL
    worker = make_queue(TASK_FILE, worker_count=2)
    errors = []
    worker.on("error", errors.append)
    worker.start()

    wait_until(lambda: side.count("end")[1] == 1, timeout=20)
    side.assert_each_ended_once([1])      # the holder had nothing left to run
    reports = [str(e) for e in errors if holder in str(e)]
    assert len(reports) == 1 and "without a record" in reports[0] and "resource x " in reports[0]
    wait_until(lambda: not unfinished_records(r, prefix), timeout=10)
    assert_queue_empty(r, prefix)
