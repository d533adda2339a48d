"""replicas=N (Redis WAIT): a submit or a finish is acknowledged only once N
replicas have it, with one WAIT per round trip. A real master and a real
replica (redis-server --replicaof), paused with SIGSTOP, the master killed
with SIGKILL and the replica promoted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import gevent
import pytest
import redis

from greenq import BrokerError, GreenQueue
from greenq.keys import Keys

from conftest import TASKS, wait_until
from redis_server import RedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD_TASK = os.path.join(TASKS, "core_record.py")
NOOP_TASK = os.path.join(TASKS, "embed_noop.py")
# A generous bound on a submit the replicas do not confirm: the WAIT's 5 s
# (config.REPLICA_WAIT), and room for a loaded machine.
UNCONFIRMED_WITHIN = 10.0


def replication_online(master: RedisServer, replica: RedisServer) -> bool:
    slave = master.client().info("replication").get("slave0") or {}
    return slave.get("state") == "online" and \
        replica.client().info("replication").get("master_link_status") == "up"


@pytest.fixture
def servers():
    """(master, replica): two fresh redis-servers, the second replicating the first."""
    # No wait for more replicas before the first sync (Redis' default: 5 s).
    master = RedisServer(extra_args=("--repl-diskless-sync-delay", "0")).start()
    replica = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(master.port))).start()
    try:
        wait_until(lambda: replication_online(master, replica))
        yield master, replica
    finally:
        for server in (replica, master):
            server.close()  # SIGKILL: a stopped (SIGSTOP) process goes too


@pytest.fixture
def queues(servers):
    """queues(server, **GreenQueue kwargs): queues of one fresh namespace,
    shut down at teardown."""
    namespace = "t" + uuid.uuid4().hex[:12]
    made = []

    def make(server: RedisServer, *tasks: str, **kwargs) -> GreenQueue:
        queue = GreenQueue(redis_url=server.url, namespace=namespace, **kwargs)
        for task in tasks:
            queue.register_task(task)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.shutdown(timeout=5)


def wait_calls(server: RedisServer) -> int:
    """How many WAIT commands `server` ran (INFO commandstats)."""
    return server.client().info("commandstats").get("cmdstat_wait", {}).get("calls", 0)


def paused(server: RedisServer):
    os.kill(server.process.pid, signal.SIGSTOP)


def resumed(server: RedisServer):
    os.kill(server.process.pid, signal.SIGCONT)


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True, None])
def test_replicas_must_be_an_int_of_zero_or_more(bad):
    with pytest.raises(ValueError, match="replicas must be an int >= 0"):
        GreenQueue(redis_url="redis://127.0.0.1:1/0", replicas=bad)


def test_an_acknowledged_submit_is_on_the_replica_when_it_returns(servers, queues):
    master, replica = servers
    queue = queues(master, replicas=1)
    keys, on_replica = Keys(queue.namespace, queue.queue_id), replica.client()
    queue.broker.load_scripts()  # else the first submit's NOSCRIPT costs a second round trip
    before = wait_calls(master)
    for i in range(20):
        job_id = queue.submit_job("embed.noop", params={"i": i})
        assert on_replica.hget(keys.job(job_id), "task") == b"embed.noop"  # read at once, no sleep
    # 250 jobs: three script calls in one round trip, and one WAIT for them.
    ids = queue.submit_jobs([{"task_id": "embed.noop", "params": {"i": i}} for i in range(250)])
    pipe = on_replica.pipeline(transaction=False)
    for job_id in ids:
        pipe.exists(keys.job(job_id))
    assert pipe.execute() == [1] * 250
    assert wait_calls(master) - before == 21


def test_with_replicas_0_no_wait_is_sent(servers, queues):
    master, _replica = servers
    queue = queues(master, NOOP_TASK, worker_count=5)
    done = []
    queue.on("job_success", done.append)
    queue.submit_jobs([{"task_id": "embed.noop"}] * 30)
    queue.submit_job("embed.noop")
    queue.start()
    wait_until(lambda: len(done) == 31)
    assert "cmdstat_evalsha" in master.client().info("commandstats")
    assert wait_calls(master) == 0


def test_finishes_wait_for_the_replicas_and_heartbeats_alone_do_not(servers, queues):
    master, _replica = servers
    queue = queues(master, NOOP_TASK, replicas=1, worker_count=5)
    done = []
    queue.on("job_success", done.append)
    queue.submit_jobs([{"task_id": "embed.noop"}] * 30)
    before = wait_calls(master)
    queue.start()
    wait_until(lambda: len(done) == 30)
    after_finishes = wait_calls(master)
    assert 1 <= after_finishes - before <= 30  # one per commit round trip, not one per job
    keys, client = Keys(queue.namespace, queue.queue_id), master.client()
    beats = set()
    wait_until(lambda: beats.add(client.zscore(keys.alive, queue.process_id)) or len(beats) >= 3)
    assert wait_calls(master) == after_finishes  # two heartbeat rounds since, no WAIT


def test_a_submit_raises_when_the_replica_does_not_confirm(servers, queues):
    master, replica = servers
    queue = queues(master, replicas=1)
    keys = Keys(queue.namespace, queue.queue_id)
    paused(replica)
    began = time.monotonic()
    with pytest.raises(BrokerError, match="only 0 of 1 replicas confirmed") as info:
        queue.submit_job("embed.noop", job_id="job-1")
    assert time.monotonic() - began < UNCONFIRMED_WITHIN
    assert isinstance(info.value, redis.RedisError)  # Redis trouble to the worker loops
    # As the docstring says: the job is on the master all the same...
    assert master.client().hget(keys.job("job-1"), "task") == b"embed.noop"
    resumed(replica)
    # ...and submitting it again with its id adds nothing, and is confirmed.
    assert queue.submit_job("embed.noop", job_id="job-1") == "job-1"
    assert master.client().llen(keys.pending) == 1
    assert replica.client().hget(keys.job("job-1"), "task") == b"embed.noop"


def test_more_replicas_than_there_are_is_an_error_that_says_how_many_confirmed(servers, queues):
    master, _replica = servers
    queue = queues(master, replicas=2)
    began = time.monotonic()
    with pytest.raises(BrokerError, match="only 1 of 2 replicas confirmed"):
        queue.submit_jobs([{"task_id": "embed.noop"}] * 3)
    assert time.monotonic() - began < UNCONFIRMED_WITHIN


def test_unconfirmed_finishes_are_held_then_sent_again_once(servers, queues):
    master, replica = servers
    submitter = queues(master)  # replicas=0: its submits go through while the replica sleeps
    worker = queues(master, RECORD_TASK, replicas=1, worker_count=10)
    record = sys.modules["greenq_tasks_core_record"]
    record.log.clear()
    seen: dict[str, list] = {"job_success": [], "error": []}
    for event, found in seen.items():
        worker.on(event, found.append)
    worker.start()
    paused(replica)
    names = [f"job{i}" for i in range(5)]
    ids = submitter.submit_jobs([{"task_id": "core.record", "params": {"name": name}}
                                 for name in names])
    wait_until(lambda: all(("end", name) in record.log for name in names))
    assert seen["job_success"] == []  # ran, finished on the master, not confirmed: held
    wait_until(lambda: seen["error"], timeout=UNCONFIRMED_WITHIN)
    [error] = seen["error"]
    assert isinstance(error, BrokerError) and "held and sent again" in str(error)
    resumed(replica)
    wait_until(lambda: len(seen["job_success"]) == 5, timeout=UNCONFIRMED_WITHIN + 5)
    gevent.sleep(0.2)  # a second success event for a job would come with the same round trip
    assert sorted(job.id for job in seen["job_success"]) == sorted(ids)
    assert sorted(record.log) == sorted([("start", n) for n in names] + [("end", n) for n in names])
    keys, on_replica = Keys(worker.namespace, worker.queue_id), replica.client()
    assert [on_replica.hget(keys.job(job_id), "state") for job_id in ids] == [b"succeeded"] * 5
    assert len(seen["error"]) == 1  # one error event for the whole outage


def test_a_submit_to_a_replica_is_refused_as_read_only_not_by_wait(servers, queues):
    # What a demoted master answers after a failover: the script's READONLY,
    # an outage to ride out (a ConnectionError, greenq/channel.py), not
    # WAIT's own complaint about replicas.
    _master, replica = servers
    queue = queues(replica, replicas=1)
    queue.broker.load_scripts()
    with pytest.raises(redis.ConnectionError, match="READONLY"):
        queue.submit_job("embed.noop")


def test_acknowledged_jobs_survive_the_failover_of_their_master(servers, queues):
    master, replica = servers
    queue = queues(master, replicas=1)
    ids = [queue.submit_job("embed.noop", params={"i": i}) for i in range(100)]
    ids += queue.submit_jobs([{"task_id": "embed.noop", "params": {"i": i}} for i in range(900)])
    master.kill()  # SIGKILL, right after the last acknowledgement
    replica.client().replicaof("NO", "ONE")
    promoted = queues(replica)
    assert promoted.stats()["pending"] == 1000
    jobs = [promoted.get_job(job_id) for job_id in ids]
    assert [job.state if job else None for job in jobs] == ["pending"] * 1000


def test_the_bench_compares_both_settings_and_worker_children_wait_too(tmp_path):
    # W2 drains with worker children (greenq run -c 2): their WAITs show
    # that a child gets replicas from its master.
    out = tmp_path / "replicas.json"
    env = {key: value for key, value in os.environ.items()
           if key not in ("GREENQ_REDIS_URL", "REDIS_URL")}
    done = subprocess.run([sys.executable, "-m", "bench.replicas", "--quick", "--rounds", "1",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    for setting in ("replicas=0", "replicas=1"):
        for name in ("W1_submit_single", "W1_submit_bulk", "W2_drain"):
            assert figures[setting][name][0] > 0, (setting, name)
    assert figures["replicas=0"]["W2_waits_per_job"] == [0]
    assert 0 < figures["replicas=1"]["W2_waits_per_job"][0] <= 1
