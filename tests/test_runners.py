"""greenq/runners.py on its own: long-lived runner greenlets, their slots,
and interrupts that reach only the job they were aimed at."""

import gevent
import gevent.event
import pytest

from greenq.errors import JobCancelled
from greenq.runners import Runners


class Job:
    def __init__(self, job_id: str) -> None:
        self.id = job_id


def test_runs_every_job_and_never_more_than_size_at_once():
    running, most, done = set(), [0], []

    def run(job, task):
        running.add(job.id)
        most[0] = max(most[0], len(running))
        gevent.sleep(0.001 * (int(job.id) % 3))
        running.discard(job.id)
        done.append(job.id)

    runners = Runners(5, run)
    for n in range(200):
        while runners.full():
            runners.wait_available(timeout=5)
        runners.start(Job(str(n)), None)
    assert runners.join(timeout=10)
    assert sorted(done, key=int) == [str(n) for n in range(200)]
    assert most[0] == 5
    assert len(runners._runners) == 5  # reused, not one per job
    assert runners.busy == 0 and runners.free_count() == 5
    runners.close()
    gevent.sleep(0.01)
    assert not runners._runners


def test_interrupt_reaches_the_running_job():
    outcome = {}
    started = gevent.event.Event()

    def run(job, task):
        started.set()
        try:
            gevent.sleep(5)
            outcome[job.id] = "finished"
        except JobCancelled as exc:
            outcome[job.id] = f"cancelled: {exc}"

    runners = Runners(2, run)
    runners.start(Job("a"), None)
    started.wait(timeout=5)
    runners.interrupt("a", JobCancelled("stop a"))
    assert runners.join(timeout=5)
    assert outcome == {"a": "cancelled: stop a"}


def test_interrupt_for_a_job_that_ended_spares_the_next_job_on_that_runner():
    """The interrupt is queued for the hub while job "a" runs; before the hub
    delivers it, "a" returns and the same (only) runner takes "b"."""
    outcome = {}
    release_a = gevent.event.Event()

    def run(job, task):
        try:
            if job.id == "a":
                release_a.wait()
            else:
                gevent.sleep(0.05)
            outcome[job.id] = "finished"
        except JobCancelled:
            outcome[job.id] = "cancelled"

    runners = Runners(1, run)
    runners.start(Job("a"), None)
    gevent.sleep(0)  # "a" waits on release_a
    release_a.set()  # "a" is woken by a hub callback queued before the interrupt's
    runners.interrupt("a", JobCancelled("too late"))
    gevent.sleep(0)
    runners.start(Job("b"), None)
    assert runners.join(timeout=5)
    assert outcome == {"a": "finished", "b": "finished"}


def test_interrupt_of_an_unknown_job_does_nothing():
    runners = Runners(1, lambda job, task: gevent.sleep(0.01))
    runners.start(Job("a"), None)
    runners.interrupt("nope", JobCancelled("x"))
    assert runners.join(timeout=5)


def test_an_error_outside_the_task_keeps_the_runner(caplog):
    seen = []

    def run(job, task):
        seen.append(job.id)
        if job.id == "bad":
            raise RuntimeError("greenq's own bug")

    runners = Runners(1, run)
    runners.start(Job("bad"), None)
    runners.start(Job("good"), None)
    assert runners.join(timeout=5)
    assert seen == ["bad", "good"]
    assert "job bad ended with an error outside its task" in caplog.text
    assert runners.busy == 0


@pytest.mark.parametrize("size", [1, 3])
def test_wait_available_returns_when_a_slot_frees(size):
    gate = gevent.event.Event()
    runners = Runners(size, lambda job, task: gate.wait())
    for n in range(size):
        runners.start(Job(str(n)), None)
    assert runners.full() and runners.free_count() == 0
    runners.wait_available(timeout=0.05)
    assert runners.full()
    gevent.spawn_later(0.05, gate.set)
    runners.wait_available(timeout=5)
    assert not runners.full()
    assert runners.join(timeout=5)


def test_an_exception_thrown_into_an_idle_runner_strands_no_job(caplog):
    seen = []
    runners = Runners(2, lambda job, task: seen.append(job.id))
    runners.start(Job("a"), None)
    runners.start(Job("b"), None)
    assert runners.join(timeout=5)
    idle = list(runners._runners)
    assert len(idle) == 2
    for runner in idle:  # a task's leftover Timeout, a stray kill: from the hub
        gevent.get_hub().loop.run_callback(runner.throw, RuntimeError("not for a runner"))
    gevent.sleep(0.01)
    for n in range(10):
        runners.start(Job(str(n)), None)
    assert runners.join(timeout=5)
    assert seen == ["a", "b", *[str(n) for n in range(10)]]
    assert "an exception reached an idle runner" in caplog.text
    assert all(not runner.dead for runner in idle)


def test_an_interrupt_for_a_job_still_in_the_inbox_reaches_it_once_it_starts():
    outcome = {}
    gate = gevent.event.Event()

    def run(job, task):
        try:
            if job.id == "a":
                gate.wait()
            gevent.sleep(0.01)
            outcome[job.id] = "finished"
        except JobCancelled as exc:
            outcome[job.id] = f"cancelled: {exc}"

    runners = Runners(2, run)
    runners.start(Job("a"), None)
    gevent.sleep(0)  # "a" runs, blocked on the gate
    runners.start(Job("b"), None)  # in the inbox: no runner has taken it yet
    runners.interrupt("b", JobCancelled("stop b"))
    gate.set()
    assert runners.join(timeout=5)
    assert outcome == {"a": "finished", "b": "cancelled: stop b"}
    assert not runners._early
