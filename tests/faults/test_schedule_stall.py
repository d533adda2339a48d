"""The Redis clock jumping forward: DEBUG SLEEP stalls Redis for a few
seconds, as a paused VM or a long fork would. The fire times missed during
the stall give one job when Redis answers again, not a burst, and the
schedule goes on on its grid."""

from __future__ import annotations

import os

import gevent
import pytest

from conftest import TASKS, wait_until
from greenq import GreenQueue
from redis_server import RedisServer

STALL = 3  # seconds: three fire times of every=1 fall inside it


@pytest.fixture
def server():
    # DEBUG SLEEP needs the debug command enabled (Redis 7 refuses it by default).
    server = RedisServer(extra_args=("--enable-debug-command", "yes")).start()
    yield server
    server.close()


def redis_ms(client) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


@pytest.mark.timeout(60)
def test_fire_times_missed_during_a_redis_stall_give_one_job_not_a_burst(server, namespace):
    r = server.client()
    queue = GreenQueue(redis_url=server.url, namespace=namespace)
    queue.register_task(os.path.join(TASKS, "sched_record.py"))
    queue.start()
    key = f"{namespace}:rec"
    try:
        queue.add_schedule("beat", "sched.record", every=1,
                           params={"url": server.url, "key": key})
        wait_until(lambda: r.llen(f"{key}:runs") >= 2, timeout=10)
        # Stall just after a fire, so the next fire time lies well inside the stall.
        seen = r.llen(f"{key}:runs")
        wait_until(lambda: r.llen(f"{key}:runs") > seen, timeout=10, interval=0.002)
        before = redis_ms(r)
        sleeper = server.client(socket_timeout=STALL + 10)
        gevent.spawn(sleeper.execute_command, "DEBUG", "SLEEP", STALL).join()
        after = redis_ms(r)
        assert after - before >= STALL * 1000
        wait_until(lambda: any(int(j.rsplit(b":", 1)[1]) > after + 1000
                               for j in r.lrange(f"{key}:runs", 0, -1)), timeout=10)
    finally:
        queue.shutdown(timeout=5)

    fire_times = sorted(int(job.rsplit(b":", 1)[1]) for job in r.lrange(f"{key}:runs", 0, -1))
    assert len(fire_times) == len(set(fire_times))
    in_stall = [t for t in fire_times if before < t <= after]
    # Three fire times fell inside the stall; one job stands for them all.
    assert len(in_stall) == 1, (before, after, fire_times)
    steps = [b - a for a, b in zip(fire_times, fire_times[1:])]
    assert all(step % 1000 == 0 for step in steps), steps  # still on its grid
    assert max(steps) >= STALL * 1000 - 1000
    # No burst: after the stall, runs started at most about one per second.
    starts = sorted(int(line.split()[1]) for line in r.lrange(f"{key}:started", 0, -1))
    first_second = [t for t in starts if after <= t < after + 1000]
    assert len(first_second) <= 2, starts
