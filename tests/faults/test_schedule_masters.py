"""The issue's test of "exactly once per fire time": three masters (`greenq
run -c 1`, real processes, each with its own scheduler greenlet and no
leader among them) on one queue for a minute of `every=1`, and a count of
runs per fire second."""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import TASKS
from greenq import GreenQueue
from sidelog import GreenqRun

MINUTE = 60.0  # the issue asks for a minute: 60 fire times, 60 chances to fire twice
MASTERS = 3


@pytest.mark.timeout(180)
def test_three_masters_fire_every_second_exactly_once_for_a_minute(tmp_path, redis_url, r,
                                                                     namespace):
    task_file = os.path.join(TASKS, "sched_record.py")
    # --log-level debug: each master logs the fires it won (scheduler.py).
    masters = [GreenqRun(tmp_path, redis_url, namespace, "-c", "1", "--log-level", "debug",
                         task_file=task_file)
               for _ in range(MASTERS)]
    try:
        for master in masters:
            master.wait_ready(1)
        queue = GreenQueue(redis_url=redis_url, namespace=namespace)
        key = f"{namespace}:rec"
        queue.add_schedule("beat", "sched.record", every=1,
                           params={"url": redis_url, "key": key})
        time.sleep(MINUTE)
        queue.remove_schedule("beat")
        time.sleep(1.5)  # the last fire's run ends
        for master in masters:
            master.send(signal.SIGTERM)
        for master in masters:
            assert master.wait(30) == 0, master.output()
    finally:
        for master in masters:
            master.kill_all()

    per_second = {int(second): int(runs) for second, runs in r.hgetall(f"{key}:per_second").items()}
    seconds = sorted(per_second)
    assert len(seconds) >= MINUTE - 2, seconds  # it fired all along
    doubled = {second: runs for second, runs in per_second.items() if runs != 1}
    assert doubled == {}, f"fire seconds run more than once: {doubled}"
    gaps = [(a, b) for a, b in zip(seconds, seconds[1:]) if b - a != 1]
    assert gaps == [], f"fire seconds missing between: {gaps}"
    runs = [job.decode() for job in r.lrange(f"{key}:runs", 0, -1)]
    assert len(runs) == len(set(runs)) == len(seconds)
    assert int(r.get(f"{key}:most_at_once")) == 1
    for master in masters:
        assert "Traceback" not in master.output(), master.output()
    # Every fire was won by exactly one master (no leader: any may win).
    won = [master.output().count("scheduler: beat fired") for master in masters]
    assert sum(won) == len(seconds), won
