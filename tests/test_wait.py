"""GreenQueue.wait(): watch.lua through its broker method, bad input refused
before anything is sent, unknown ids, timeouts, and the shared pub/sub
listener (one connection per process, its reconnects, sweeps and shutdown)."""

from __future__ import annotations

import time

import gevent
import pytest

import greenq
from greenq import waiting
from greenq.job import ENDED
from greenq.serializers import JSON


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


def test_a_record_deleted_by_hand_during_wait_raises_job_not_found_by_the_sweep(
        make_queue, r, monkeypatch):
    """Nothing is published for a deleted record: the sweep finds it. The
    interval is shortened here; the bound is generous."""
    monkeypatch.setattr(waiting, "SWEEP_INTERVAL", 0.5)
    q = make_queue()
    job_id = queued_job(q)
    waiter = gevent.spawn(q.wait, job_id, 30)
    gevent.sleep(0.2)
    assert r.hget(q.keys.job(job_id), "watch") == b"1"
    r.delete(q.keys.job(job_id))
    waiter.join(5)
    assert waiter.ready(), "the waiter still hangs"
    assert isinstance(waiter.exception, greenq.JobNotFoundError)
    assert "deleted" in str(waiter.exception)


# -- the listener --------------------------------------------------------------

def test_many_waiters_share_one_pubsub_connection(make_queue, redis_url, namespace, r):
    q = make_queue(redis_url=named(redis_url, namespace))
    ids = [queued_job(q) for _ in range(50)]
    waiters = [gevent.spawn(q.wait, job_id, 2) for job_id in ids for _ in range(2)]
    gevent.sleep(0.5)
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
    assert pubsub_connections(r, namespace) == []
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


def test_a_pubsub_connection_killed_while_idle_is_replaced(make_queue, redis_url, namespace, r):
    q = make_queue(redis_url=named(redis_url, namespace))
    job_id = queued_job(q)
    waiter = gevent.spawn(q.wait, job_id, 10)
    gevent.sleep(0.2)
    [before] = pubsub_connections(r, namespace)
    assert r.client_kill_filter(_type="pubsub") >= 1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = pubsub_connections(r, namespace)
        if now and now[0]["id"] != before["id"]:
            break
        gevent.sleep(0.05)
    [after] = pubsub_connections(r, namespace)
    assert after["id"] != before["id"]
    assert not waiter.ready()
    waiter.kill()

