"""An idle worker's alarm for the next delayed job (Worker._wake_for_due,
_wake): the fetch that a wake-up causes often answers before wake.lua
itself does, and the alarm it sets for the next due job must not be lost
(it was: the fetch took the alarm still waiting for wake.lua's reply for an
earlier alarm to come, set none, and the next delayed job waited for the
1 s BLMOVE timeout)."""

from __future__ import annotations

import gevent

from conftest import wait_until


def test_the_alarm_set_while_a_wake_up_is_out_is_kept(make_queue, monkeypatch):
    q = make_queue("echo", worker_count=2)
    q.start()
    worker = q._runner
    lane = worker._lanes[0]  # the queue's one partition
    real_wake = worker.broker.wake
    fired = []

    def wake_answered_after_the_fetch(client=None):
        if not fired:
            # The fetch this wake-up caused answers first and learns that
            # the next delayed job is due in 0.5 s.
            worker._wake_for_due(lane, 500)
        fired.append(gevent.getcurrent())
        return real_wake(client)

    monkeypatch.setattr(worker.broker, "wake", wake_answered_after_the_fetch)
    worker._wake_for_due(lane, 0)
    wait_until(lambda: fired, timeout=5)
    first = fired[0]
    wait_until(lambda: first.dead, timeout=5)
    assert lane.alarm is not None and lane.alarm is not first
    assert not lane.alarm.dead, "no alarm is set for the next delayed job"
    wait_until(lambda: len(fired) == 2, timeout=5)  # and it goes off
