"""GreenQueue.wait(): watch.lua through its broker method, bad input refused
before anything is sent, unknown ids and timeouts, then real jobs run by
workers in this process and by `greenq run` child processes, waited on by
greenlets here and by threads of an unpatched process: every end wakes
every waiter, on one pub/sub connection per process, through killed
connections, a Redis restart, a record deleted by hand and result_ttl 0.

Most tests queue their jobs first, wait until every waiter is past its
check (the record carries watch.lua's mark), and only then start the
workers: the end then comes after the wait() call, so the pub/sub path is
what wakes the waiter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import gevent
import pytest

import greenq
from conftest import TASKS, wait_until
from faults.sidelog import GreenqRun
from greenq import config, waiting
from greenq.job import ENDED
from greenq.serializers import JSON
from redis_server import RedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def named(redis_url: str, name: str) -> str:
    """The URL with a client name, so this queue's connections can be told
    apart in CLIENT LIST."""
    return f"{redis_url}?client_name={name}"


def connections(r, name: str) -> list[dict]:
    return [c for c in r.client_list() if c.get("name") == name]


def pubsub_connections(r, name: str) -> list[dict]:
    return [c for c in connections(r, name) if int(c.get("sub", 0)) or "P" in c.get("flags", "")]


def queued_job(q) -> str:
    """A job that nothing runs (no worker started): it stays pending."""
    return q.submit_job("t.never", params={"n": 1})


def marked(r, q, ids) -> int:
    """How many of the jobs carry watch.lua's mark (a waiter is past its check)."""
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(q.keys.job(job_id), "watch")
    return sum(1 for value in pipe.execute() if value)


def wait_marked(r, q, ids, timeout: float = 20.0) -> None:
    wait_until(lambda: marked(r, q, ids) == len(ids), timeout)


def join(greenlets, timeout: float):
    gevent.joinall(greenlets, timeout=timeout)
    assert all(g.ready() for g in greenlets), "some waiters still hang"
    for g in greenlets:
        if g.exception is not None:
            raise g.exception
    return [g.value for g in greenlets]


# -- watch.lua ---------------------------------------------------------------

def test_watch_marks_a_job_not_ended_and_returns_an_empty_reply(make_queue, r):
    q = make_queue()
    job_id = queued_job(q)
    assert q.broker.watch([job_id]) == [[]]
    assert r.hget(q.keys.job(job_id), "watch") == b"1"
    assert r.hget(q.keys.job(job_id), "state") == b"pending"


@pytest.mark.parametrize("state", sorted(ENDED))
def test_watch_returns_an_ended_record_whole_and_does_not_mark_it(make_queue, r, state):
    q = make_queue()
    key = q.keys.job("done")
    r.hset(key, mapping={"task": "t.x", "state": state, "attempts": 1})
    [reply] = q.broker.watch(["done"])
    assert dict(zip(reply[0::2], reply[1::2])) == {b"task": b"t.x", b"state": state.encode(),
                                                   b"attempts": b"1"}
    assert r.hget(key, "watch") is None


def test_watch_of_an_unknown_id_answers_none_and_writes_nothing(make_queue, r, namespace):
    q = make_queue()
    assert q.broker.watch(["nope"]) == [None]
    assert r.exists(q.keys.job("nope")) == 0
    assert list(r.scan_iter(match=namespace + ":*")) == []


def test_watch_of_a_key_that_is_not_a_hash_answers_none_and_leaves_it(make_queue, r):
    q = make_queue()
    r.set(q.keys.job("odd"), "a string")
    assert q.broker.watch(["odd"]) == [None]
    assert r.get(q.keys.job("odd")) == b"a string"


def test_watch_answers_each_id_of_a_batch_in_order(make_queue, r):
    q = make_queue()
    pending = queued_job(q)
    r.hset(q.keys.job("done"), mapping={"task": "t.x", "state": "succeeded"})
    replies = q.broker.watch([pending, "nope", "done"])
    assert replies[0] == [] and replies[1] is None and b"succeeded" in replies[2]


# -- bad input ---------------------------------------------------------------

@pytest.mark.parametrize("timeout, error", [
    (-1, greenq.ParamsError), (-0.001, greenq.ParamsError), (float("nan"), greenq.ParamsError),
    ("1", TypeError), (True, TypeError), ([1], TypeError)])
def test_a_bad_timeout_is_refused_before_anything_is_sent(make_queue, redis_url, namespace, r,
                                                          timeout, error):
    q = make_queue(redis_url=named(redis_url, namespace))
    job_id = queued_job(q)
    with pytest.raises(error, match="timeout"):
        q.wait(job_id, timeout=timeout)
    assert r.hget(q.keys.job(job_id), "watch") is None
    assert pubsub_connections(r, namespace) == []


@pytest.mark.parametrize("job_id, error", [
    ("", greenq.ParamsError), ("x" * 513, greenq.ParamsError), (None, TypeError),
    (12, TypeError), (b"abc", TypeError)])
def test_a_bad_job_id_is_refused_before_anything_is_sent(make_queue, redis_url, namespace, r,
                                                         job_id, error):
    q = make_queue(redis_url=named(redis_url, namespace))
    with pytest.raises(error, match="job_id"):
        q.wait(job_id)
    assert connections(r, namespace) == []


# -- outcomes without a worker -----------------------------------------------

def test_an_unknown_id_raises_job_not_found_at_once_and_writes_nothing(make_queue, r, namespace):
    q = make_queue()
    began = time.monotonic()
    with pytest.raises(greenq.JobNotFoundError) as caught:
        q.wait("no-such-job", timeout=30)
    assert time.monotonic() - began < 2
    assert isinstance(caught.value, LookupError) and isinstance(caught.value, greenq.GreenQError)
    assert list(r.scan_iter(match=namespace + ":*")) == []


def test_a_record_that_already_ended_returns_at_once_with_its_result(make_queue, r):
    """The already-ended edge only: the record is written by hand here, as
    a finished job leaves it (tests with real workers cover the rest)."""
    q = make_queue()
    r.hset(q.keys.job("ended"), mapping={
        "task": "t.x", "enc": JSON, "params": '{"a": 1}', "state": "succeeded",
        "renc": JSON, "result": '{"ok": [1, 2]}', "attempts": 1, "retries": 0})
    began = time.monotonic()
    job = q.wait("ended")
    assert time.monotonic() - began < 2
    assert (job.id, job.task_id, job.state, job.params, job.result, job.attempts) == \
        ("ended", "t.x", "succeeded", {"a": 1}, {"ok": [1, 2]}, 1)


def test_a_job_that_does_not_end_raises_wait_timeout_after_the_timeout(make_queue, r):
    q = make_queue()
    job_id = queued_job(q)
    began = time.monotonic()
    with pytest.raises(greenq.WaitTimeout) as caught:
        q.wait(job_id, timeout=0.5)
    waited = time.monotonic() - began
    assert 0.5 <= waited < 2.5
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, greenq.GreenQError)
    assert job_id in str(caught.value)
    # the job itself is untouched, and marked for whoever waits next
    assert r.hget(q.keys.job(job_id), "state") == b"pending"
    assert r.hget(q.keys.job(job_id), "watch") == b"1"
    assert q.stats()["pending"] == 1


def test_a_zero_timeout_checks_once_and_raises_at_once(make_queue, r):
    q = make_queue()
    job_id = queued_job(q)
    began = time.monotonic()
    with pytest.raises(greenq.WaitTimeout):
        q.wait(job_id, timeout=0)
    assert time.monotonic() - began < 2
    r.hset(q.keys.job("ended"), mapping={"task": "t.x", "state": "cancelled"})
    assert q.wait("ended", timeout=0).state == "cancelled"
    with pytest.raises(greenq.JobNotFoundError):
        q.wait("nope", timeout=0)


def test_an_infinite_timeout_means_no_limit(make_queue, r):
    q = make_queue()
    r.hset(q.keys.job("ended"), mapping={"task": "t.x", "state": "failed", "error": "boom"})
    job = q.wait("ended", timeout=float("inf"))
    assert (job.state, job.error) == ("failed", "boom")


# -- the listener --------------------------------------------------------------

def test_many_waiters_share_one_pubsub_connection(make_queue, redis_url, namespace, r):
    q = make_queue(redis_url=named(redis_url, namespace))
    ids = [queued_job(q) for _ in range(50)]
    waiters = [gevent.spawn(q.wait, job_id, 1) for job_id in ids for _ in range(2)]
    wait_marked(r, q, ids)
    subscribed = pubsub_connections(r, namespace)
    assert len(subscribed) == 1
    assert len(connections(r, namespace)) <= 1 + 4  # the pool: config.SHARED_POOL_SIZE
    gevent.joinall(waiters, timeout=10)
    assert all(isinstance(w.exception, greenq.WaitTimeout) for w in waiters)


def test_shutdown_wakes_waiters_with_state_error_and_closes_the_connection(
        make_queue, redis_url, namespace, r):
    q = make_queue(redis_url=named(redis_url, namespace))
    job_id = queued_job(q)
    waiters = [gevent.spawn(q.wait, job_id) for _ in range(3)]
    gevent.sleep(0.3)
    assert len(pubsub_connections(r, namespace)) == 1
    began = time.monotonic()
    q.shutdown()
    assert time.monotonic() - began < 2
    gevent.joinall(waiters, timeout=5)
    assert all(isinstance(w.exception, greenq.StateError) for w in waiters)
    wait_until(lambda: pubsub_connections(r, namespace) == [], timeout=5)  # Redis saw it close
    with pytest.raises(greenq.StateError):
        q.wait(job_id)


def test_the_listener_stops_after_nobody_waited_for_a_while_and_starts_again(
        make_queue, redis_url, namespace, r, monkeypatch):
    monkeypatch.setattr(waiting, "SWEEP_INTERVAL", 0.2)
    monkeypatch.setattr(waiting, "IDLE_STOP", 0.5)
    q = make_queue(redis_url=named(redis_url, namespace))
    job_id = queued_job(q)
    with pytest.raises(greenq.WaitTimeout):
        q.wait(job_id, timeout=0.2)
    assert len(pubsub_connections(r, namespace)) == 1
    deadline = time.monotonic() + 5
    while pubsub_connections(r, namespace) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert pubsub_connections(r, namespace) == []
    # the next wait() starts it again
    r.hset(q.keys.job("ended"), mapping={"task": "t.x", "state": "succeeded"})
    with pytest.raises(greenq.WaitTimeout):
        q.wait(job_id, timeout=0.2)
    assert len(pubsub_connections(r, namespace)) == 1
    assert q.wait("ended").state == "succeeded"


def test_wait_against_an_unreachable_redis_raises_broker_error_not_a_hang(namespace):
    q = greenq.GreenQueue(redis_url="redis://127.0.0.1:1/0", namespace=namespace)
    try:
        began = time.monotonic()
        with pytest.raises(greenq.BrokerError, match="subscribe"):
            q.wait("some-id")
        assert time.monotonic() - began < 10
    finally:
        q.shutdown()


def test_a_subscription_refused_by_the_acl_raises_broker_error(
        make_queue, redis_server, redis_url, namespace, r):
    user, password = namespace + "u", "pw-" + namespace
    r.execute_command("ACL", "SETUSER", user, "on", ">" + password, "resetkeys",
                      f"~{namespace}:*", "resetchannels", "+@all")
    try:
        url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0"
        q = make_queue(redis_url=url)
        job_id = queued_job(q)
        with pytest.raises(greenq.BrokerError, match="NOPERM|permission"):
            q.wait(job_id, timeout=5)
    finally:
        r.execute_command("ACL", "DELUSER", user)


def test_a_waiter_in_a_process_forked_after_a_wait_gets_a_listener_of_its_own(make_queue, r):
    """A child inherits the parent's listener object but not its thread."""
    import os

    q = make_queue()
    r.hset(q.keys.job("ended"), mapping={"task": "t.x", "state": "succeeded"})
    assert q.wait("ended").state == "succeeded"
    pid = os.fork()
    if pid == 0:  # the child: exit status says how its wait went
        code = 1
        try:
            code = 0 if q.wait("ended", timeout=5).state == "succeeded" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# -- real jobs, waiters in this process ---------------------------------------

def test_a_job_ending_after_wait_was_called_wakes_each_of_its_waiters_with_its_result(
        make_queue, r):
    q = make_queue("waited")
    job_id = q.submit_job("waited.value", params={"value": {"n": [1, 2]}, "seconds": 0.2})
    waiters = [gevent.spawn(q.wait, job_id, 30) for _ in range(3)]
    wait_marked(r, q, [job_id])
    gevent.sleep(0.1)
    assert not any(w.ready() for w in waiters)
    q.start()
    jobs = join(waiters, 10)
    for job in jobs:
        assert (job.id, job.task_id, job.state, job.result, job.params, job.attempts, job.error) \
            == (job_id, "waited.value", "succeeded", {"n": [1, 2]},
                {"value": {"n": [1, 2]}, "seconds": 0.2}, 1, None)
    assert len({id(job) for job in jobs}) == 3  # each caller gets its own Job
    # a wait() after the end returns at once, from the kept record
    began = time.monotonic()
    assert q.wait(job_id).result == {"n": [1, 2]}
    assert time.monotonic() - began < 1


def test_a_thousand_greenlets_waiting_on_a_thousand_jobs_share_one_pubsub_connection(
        make_queue, redis_url, namespace, r):
    waiting_name, working_name = namespace + "w", namespace + "r"
    q = make_queue(redis_url=named(redis_url, waiting_name))  # waits only
    workers = make_queue("waited", worker_count=500, redis_url=named(redis_url, working_name))
    n = 1000
    ids = q.submit_jobs([{"task_id": "waited.value", "params": {"value": i}} for i in range(n)])
    waiters = [gevent.spawn(q.wait, job_id, 120) for job_id in ids]
    wait_marked(r, q, ids, timeout=60)
    assert len(pubsub_connections(r, waiting_name)) == 1
    assert len(connections(r, waiting_name)) <= 1 + config.SHARED_POOL_SIZE
    workers.start()
    jobs = join(waiters, 120)
    assert [job.id for job in jobs] == ids
    assert [job.result for job in jobs] == list(range(n))
    assert {job.state for job in jobs} == {"succeeded"}
    assert len(pubsub_connections(r, waiting_name)) == 1
    assert len(connections(r, waiting_name)) <= 1 + config.SHARED_POOL_SIZE


def test_a_job_that_fails_with_no_retry_left_wakes_its_waiter_its_retries_do_not(make_queue, r):
    q = make_queue("waited")
    job_id = q.submit_job("waited.raise", params={"message": "out of luck"}, retries=2)
    waiter = gevent.spawn(q.wait, job_id, 30)
    wait_marked(r, q, [job_id])
    q.start()
    [job] = join([waiter], 15)
    # woken by the third run's failure, not by the first two (retried)
    assert (job.state, job.attempts, job.retries) == ("failed", 3, 0)
    assert "ValueError: out of luck" in job.error
    assert r.lrange(q.keys.failed, 0, -1) == [job_id.encode()]


def test_cancelling_a_queued_job_wakes_its_waiters_at_once(make_queue, r):
    q = make_queue("waited", worker_count=2)
    holder = q.submit_job("waited.block", resource_id="res", params={"seconds": 30})
    behind = q.submit_job("waited.value", resource_id="res", params={"value": 1})
    q.start()
    wait_until(lambda: q.get_job(holder).state == "active")
    waiters = [gevent.spawn(q.wait, behind, 30) for _ in range(2)]
    wait_marked(r, q, [behind])
    assert q.get_job(behind).state == "waiting"
    began = time.monotonic()
    assert q.cancel(behind)
    jobs = join(waiters, 5)
    assert time.monotonic() - began < 2
    assert [job.state for job in jobs] == ["cancelled", "cancelled"]
    assert q.cancel(holder)


def test_cancelling_a_running_job_wakes_its_waiter_once_the_job_stopped(make_queue, r):
    q = make_queue("waited")
    job_id = q.submit_job("waited.block", params={"seconds": 30})
    q.start()
    wait_until(lambda: q.get_job(job_id).state == "active")
    waiter = gevent.spawn(q.wait, job_id, 30)
    wait_marked(r, q, [job_id])
    began = time.monotonic()
    assert q.cancel(job_id)
    [job] = join([waiter], 10)
    assert job.state == "cancelled" and job.result is None
    assert time.monotonic() - began < 6


def test_with_result_ttl_zero_a_waiter_still_gets_the_result(make_queue, r):
    q = make_queue("waited", result_ttl=0)
    job_id = q.submit_job("waited.value", params={"value": "kept for the waiter"})
    waiter = gevent.spawn(q.wait, job_id, 30)
    wait_marked(r, q, [job_id])
    q.start()
    [job] = join([waiter], 10)
    assert (job.state, job.result) == ("succeeded", "kept for the waiter")
    # kept for WATCHED_RECORD_GRACE, then gone; an unwatched one goes at once
    assert 0 < r.pttl(q.keys.job(job_id)) <= config.WATCHED_RECORD_GRACE * 1000
    other = q.submit_job("waited.value", params={"value": 2})
    wait_until(lambda: r.exists(q.keys.job(other)) == 0)
    with pytest.raises(greenq.JobNotFoundError):
        q.wait(other, timeout=1)


def test_a_record_deleted_by_hand_during_wait_raises_job_not_found_within_the_sweep(
        make_queue, r):
    """Nothing is published for a deleted record: the listener's sweep
    (every waiting.SWEEP_INTERVAL, 10 s) finds it. A generous bound."""
    q = make_queue()
    job_id = queued_job(q)
    waiter = gevent.spawn(q.wait, job_id)
    wait_marked(r, q, [job_id])
    r.delete(q.keys.job(job_id))
    waiter.join(waiting.SWEEP_INTERVAL + 5)
    assert waiter.ready(), "the waiter still hangs"
    assert isinstance(waiter.exception, greenq.JobNotFoundError)
    assert "deleted" in str(waiter.exception)


# -- connections lost while waiting ----------------------------------------------

def test_a_waiter_wakes_when_its_pubsub_connection_was_killed_while_it_waited(
        make_queue, redis_url, namespace, r):
    q = make_queue("waited", redis_url=named(redis_url, namespace))
    job_id = q.submit_job("waited.value", params={"value": 5})
    waiter = gevent.spawn(q.wait, job_id, 30)
    wait_marked(r, q, [job_id])
    [before] = pubsub_connections(r, namespace)
    assert r.client_kill_filter(_id=before["id"]) == 1
    replaced = ([], [before["id"]])
    wait_until(lambda: [c["id"] for c in pubsub_connections(r, namespace)] not in replaced)
    assert not waiter.ready()
    q.start()
    [job] = join([waiter], 10)
    assert (job.state, job.result) == ("succeeded", 5)


def test_an_end_published_while_the_listener_was_away_still_wakes_the_waiter(
        make_queue, redis_server, namespace, r):
    """The listener cannot subscribe again (its ACL user lost SUBSCRIBE)
    while the job ends, so the id published is lost for it for sure; once
    it may subscribe again, its re-check after the re-subscription wakes
    the waiter."""
    user, password = namespace + "u", "pw-" + namespace
    r.execute_command("ACL", "SETUSER", user, "on", ">" + password, "resetkeys", "~*",
                      "resetchannels", "&*", "+@all")
    try:
        url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0"
        q = make_queue(redis_url=url)                         # waits, as `user`
        workers = make_queue("waited")                        # runs the job, as default
        job_id = q.submit_job("waited.value", params={"value": "late news"})
        waiter = gevent.spawn(q.wait, job_id, 60)
        wait_marked(r, q, [job_id])
        r.execute_command("ACL", "SETUSER", user, "-subscribe")
        assert r.client_kill_filter(_type="pubsub", _user=user) == 1
        workers.start()
        wait_until(lambda: workers.get_job(job_id).state == "succeeded")
        gevent.sleep(0.5)
        assert not waiter.ready()                             # nobody heard the end
        r.execute_command("ACL", "SETUSER", user, "+subscribe")
        [job] = join([waiter], config.RECONNECT_BACKOFF[1] + 5)
        assert (job.state, job.result) == ("succeeded", "late news")
    finally:
        r.execute_command("ACL", "DELUSER", user)


@pytest.fixture
def own_redis():
    """A redis-server of this test's own, keeping its data across a restart (AOF)."""
    server = RedisServer(persistence=True).start()
    yield server
    server.close()


def test_a_waiter_wakes_when_redis_restarted_while_it_waited(own_redis, make_queue):
    r = own_redis.client()
    q = make_queue("waited", redis_url=own_redis.url)
    job_id = q.submit_job("waited.value", params={"value": "after the restart"})
    waiter = gevent.spawn(q.wait, job_id, 60)
    wait_marked(r, q, [job_id])
    own_redis.restart()
    r = own_redis.client()
    assert r.hget(q.keys.job(job_id), "watch") == b"1"        # the AOF kept the mark
    assert not waiter.ready()
    q.start()
    [job] = join([waiter], 20)
    assert (job.state, job.result) == ("succeeded", "after the restart")
    wait_until(lambda: len([c for c in r.client_list() if int(c.get("sub", 0))]) == 1)


# -- other processes -------------------------------------------------------------

@pytest.fixture
def runs(tmp_path, redis_url, namespace):
    started: list[GreenqRun] = []

    def start(*options: str) -> GreenqRun:
        run = GreenqRun(tmp_path, redis_url, namespace, *options,
                        task_file=os.path.join(TASKS, "waited.py"))
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill_all()


def test_greenlets_here_wait_for_jobs_that_greenq_run_children_end(make_queue, r, runs):
    q = make_queue()  # waits only
    ids = q.submit_jobs([{"task_id": "waited.value", "params": {"value": i}} for i in range(20)])
    failing = q.submit_job("waited.raise", params={"message": "child says no"})
    waiters = [gevent.spawn(q.wait, job_id, 60) for job_id in [*ids, failing] * 2]
    wait_marked(r, q, [*ids, failing])
    runs("-c", "2")
    jobs = join(waiters, 60)
    assert [job.result for job in jobs] == [*range(20), None] * 2
    assert [job.state for job in jobs] == (["succeeded"] * 20 + ["failed"]) * 2
    assert "ValueError: child says no" in jobs[20].error


UNPATCHED_WAITERS = """
import json, sys, threading
import gevent.monkey
from greenq import GreenQueue

assert not gevent.monkey.is_module_patched("socket")
q = GreenQueue(redis_url=URL, namespace=NS)
out, lock = {}, threading.Lock()

def waiter(n, job_id):
    try:
        job = q.wait(job_id, timeout=60)
        result = [job.id, job.state, job.result]
    except BaseException as exc:
        result = repr(exc)
    with lock:
        out[n] = result

threads = [threading.Thread(target=waiter, args=(n, job_id))
           for n, job_id in enumerate(IDS * PER_JOB)]
for thread in threads:
    thread.start()
print("started", flush=True)
for thread in threads:
    thread.join(90)
alive = sum(thread.is_alive() for thread in threads)
q.shutdown()
print(json.dumps({"out": out, "alive": alive, "threads_left": threading.active_count()}))
"""


def unpatched(script: str, **values) -> subprocess.Popen:
    """`script` in a fresh interpreter that gevent has not patched."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("GREENQ_REDIS_URL", None)
    env.pop("REDIS_URL", None)
    preamble = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    return subprocess.Popen([sys.executable, "-c", preamble + textwrap.dedent(script)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_threads_of_an_unpatched_process_and_greenlets_here_all_wake_on_the_same_jobs(
        make_queue, redis_url, namespace, r):
    """Many waiters on one job, in two processes: each of 4 jobs is waited on
    by 3 threads there and 2 greenlets here; all wake with the job."""
    q = make_queue("waited")
    ids = q.submit_jobs([{"task_id": "waited.value", "params": {"value": i}} for i in range(4)])
    name = namespace + "t"
    process = unpatched(UNPATCHED_WAITERS, URL=named(redis_url, name), NS=namespace, IDS=ids,
                        PER_JOB=3)
    try:
        assert process.stdout.readline().strip() == "started", process.stderr.read()
        wait_until(lambda: len(pubsub_connections(r, name)) == 1, timeout=20)
        here = [gevent.spawn(q.wait, job_id, 60) for job_id in ids * 2]
        wait_marked(r, q, ids)
        gevent.sleep(0.3)  # the threads' own checks (one round trip each)
        q.start()
        jobs = join(here, 20)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["alive"] == 0 and report["threads_left"] <= 2, report
    there = [report["out"][str(n)] for n in range(12)]
    assert there == [[job_id, "succeeded", i] for job_id, i in zip(ids * 3, [0, 1, 2, 3] * 3)]
    assert [(job.id, job.result) for job in jobs] == list(zip(ids * 2, [0, 1, 2, 3] * 2))
    # its shutdown closed the listener's connection
    wait_until(lambda: pubsub_connections(r, name) == [], timeout=5)
