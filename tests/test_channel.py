"""Script channels (greenq/channel.py), the connections of the hot paths,
against the test redis-server: replies in order with error replies in place,
a connection Redis closed is re-sent on only for calls safe to send twice,
NOSCRIPT reloads, and a bounded pool."""

import json
import time

import gevent
import gevent.event
import pytest
import redis
from redis.exceptions import ResponseError

from greenq import channel as channel_module
from greenq import config
from greenq.channel import ChannelPool
from test_input import run_unpatched


@pytest.fixture
def connection(redis_url):
    return config.connection_kwargs(redis_url, None)


def client_id(channel) -> int:
    [cid] = channel.execute([("CLIENT", "ID")])
    return cid


def test_a_channel_returns_every_reply_in_order_with_error_replies_in_place(connection, namespace):
    channel = ChannelPool(connection, 1).new_channel()
    key = namespace + ":k"
    replies = channel.execute([("SET", key, "1"), ("LPUSH", key, "x"), ("GET", key)])
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ResponseError) and "WRONGTYPE" in str(replies[1])
    assert replies[2] == b"1"
    # the error reply was read in full: the next call is in step
    assert channel.execute([("INCR", key), ("GET", key)]) == [2, b"2"]
    channel.disconnect()


def test_a_submit_after_redis_closed_the_idle_connection_is_sent_again_once(make_queue, r):
    q = make_queue()
    first = q.submit_job("t.any", params={"n": 1})
    with q.broker.lanes.borrow() as channel:
        cid = client_id(channel)
    assert r.client_kill_filter(_id=cid) == 1
    second = q.submit_job("t.any", params={"n": 2})
    prefix = q.broker.keys.prefix
    assert sorted(r.lrange(prefix + "pending", 0, -1)) == sorted([first.encode(), second.encode()])
    assert q.stats()["pending"] == 2


def test_a_call_not_safe_to_resend_raises_when_the_connection_was_closed(connection, r, namespace):
    pool = ChannelPool(connection, 1)
    key = namespace + ":n"
    assert pool.execute([("INCR", key)], resend_safe=False) == [1]
    with pool.borrow() as channel:
        cid = client_id(channel)
    r.client_kill_filter(_id=cid)
    with pytest.raises(redis.ConnectionError):
        pool.execute([("INCR", key)], resend_safe=False)
    assert r.get(key) == b"1"
    # the next call reconnects
    assert pool.execute([("INCR", key)], resend_safe=False) == [2]
    pool.disconnect()


def test_a_fresh_connection_that_fails_is_not_retried():
    """Only a connection that served calls before can have been closed while
    idle; a first call that fails is a real outage and raises at once."""
    kwargs = config.connection_kwargs("redis://127.0.0.1:1/0", None)  # nothing listens
    pool = ChannelPool(kwargs, 1)
    with pytest.raises(redis.ConnectionError):
        pool.execute([("PING",)], resend_safe=True)


def test_scripts_flushed_from_redis_are_reloaded_on_a_channel(make_queue, r):
    q = make_queue()
    q.submit_job("t.any")
    r.script_flush()
    job_id = q.submit_job("t.any")
    assert r.hget(q.broker.keys.job(job_id), "task") == b"t.any"
    channel = q.broker.script_channel()
    r.script_flush()
    assert q.broker.heartbeat("p1", channel)[0] == 0
    channel.disconnect()


def test_a_full_pool_makes_callers_wait_then_fail_clearly(connection, monkeypatch):
    monkeypatch.setattr(config, "SOCKET_TIMEOUT", 0.3)
    pool = ChannelPool(connection, 1)
    release = gevent.event.Event()

    def hold():
        with pool.borrow():
            release.wait()

    holder = gevent.spawn(hold)
    gevent.sleep(0.05)
    with pytest.raises(redis.ConnectionError, match="no free Redis connection"):
        pool.execute([("PING",)], resend_safe=True)
    release.set()
    holder.join()
    assert pool.execute([("PING",)], resend_safe=True) == [b"PONG"]
    pool.disconnect()


THREADED_SUBMITS = """
import json, threading, time
import gevent.monkey
import redis
from greenq import GreenQueue, config

assert not gevent.monkey.is_module_patched("socket")
q = GreenQueue(redis_url=URL + "?client_name=" + NAME, namespace=NS)
ids, errors = [q.submit_job("t.any")], []  # one connection open, idle
lock = threading.Lock()

def submitter(t):
    try:
        for i in range(SUBMITS):
            job_id = q.submit_job("t.any", params={"t": t, "i": i})
            with lock:
                ids.append(job_id)
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=submitter, args=(t,)) for t in range(THREADS)]
began = time.perf_counter()
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(60)
seconds = time.perf_counter() - began
opened = [c for c in redis.Redis.from_url(URL).client_list() if c["name"] == NAME]
print(json.dumps({"ids": ids, "errors": errors, "seconds": seconds, "opened": len(opened),
                  "pool_size": config.SHARED_POOL_SIZE,
                  "threads_alive": sum(thread.is_alive() for thread in threads)}))
"""


def test_sixteen_threads_submitting_at_once_in_an_unpatched_process_share_the_pool(
        redis_url, namespace, r):
    """A Django or Flask app under a threaded server: more threads than
    connections wait their turn for one (a connection freed in one thread
    wakes a waiter in another), and no more connections than the pool's size
    are opened however the threads race."""
    threads, submits = 16, 20
    result = run_unpatched(THREADED_SUBMITS, URL=redis_url, NS=namespace, NAME=namespace,
                           THREADS=threads, SUBMITS=submits)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["errors"] == [] and out["threads_alive"] == 0
    assert len(set(out["ids"])) == 1 + threads * submits
    assert r.llen(f"{namespace}:{{default}}:pending") == 1 + threads * submits
    assert 1 <= out["opened"] <= out["pool_size"]
    assert out["seconds"] < 5  # about 0.1 s here; a lost wake-up used to cost 10 s


# -- polling for a reply (await_reply) -------------------------------------------


def sent(channel, *command) -> None:
    connection = channel.connection
    connection.connect()
    connection.send_packed_command(connection.pack_commands([command]), check_health=False)


def test_a_shared_channel_polls_for_a_prompt_reply_and_reads_it(connection):
    pool = ChannelPool(connection, 1)
    with pool.borrow() as channel:
        assert channel.spin
        sent(channel, "PING")
        channel_module.await_reply(channel.connection)
        # The reply is there now: the read takes it without waiting in the hub.
        assert channel.connection.can_read(timeout=0)
        assert channel.connection.read_response() in (b"PONG", "PONG")
        assert channel.execute([("ECHO", "x")]) == [b"x"]
    assert not pool.new_channel().spin  # a fetcher's or committer's own channel never polls


def test_polling_gives_up_after_its_moment_and_the_read_still_gets_the_reply(connection):
    pool = ChannelPool(connection, 1)
    with pool.borrow() as channel:
        sent(channel, "BLPOP", "greenq-test-nothing-here", "0.2")  # answers in 0.2 s
        began = time.perf_counter()
        channel_module.await_reply(channel.connection)
        polled = time.perf_counter() - began
        assert polled < 0.1  # SPIN_SECONDS (100 us), with room for a busy machine
        assert not channel.connection.can_read(timeout=0)
        assert channel.connection.read_response() is None


def test_no_polling_while_other_greenlets_are_ready_to_run(connection, monkeypatch):
    polls = []
    pool = ChannelPool(connection, 1)
    with pool.borrow() as channel:
        sent(channel, "BLPOP", "greenq-test-nothing-here", "0.2")  # answers in 0.2 s
        monkeypatch.setattr(channel_module, "_yield_cpu", lambda: polls.append(1))
        gevent.get_hub().loop.run_callback(lambda: None)  # a greenlet ready to run
        channel_module.await_reply(channel.connection)
        assert polls == []
        gevent.sleep(0)  # the callback ran: the hub is idle again
        channel_module.await_reply(channel.connection)
        assert polls  # polled until SPIN_SECONDS ran out (the reply comes later)
        assert channel.connection.read_response() is None


UNPATCHED_SUBMITS = """
import gevent.monkey
from greenq import GreenQueue
from greenq import channel

assert not gevent.monkey.is_module_patched("socket")
q = GreenQueue(redis_url=URL, namespace=NS)
ids = [q.submit_job("poll.task", params={"n": n}) for n in range(20)]
with q._partition_set().brokers[0].nodes.lanes(q._partition_set().brokers[0].address).borrow() as c:
    c.execute([("PING",)])
    assert getattr(c.connection._sock, "_sock", None) is None  # nothing to poll: waits as before
print(len(set(ids)))
"""


def test_an_unpatched_program_submits_without_polling(redis_url, namespace, r):
    result = run_unpatched(UNPATCHED_SUBMITS, URL=redis_url, NS=namespace)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "20"
    assert r.llen(f"{namespace}:{{default}}:pending") == 20
