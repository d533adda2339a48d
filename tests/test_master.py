"""Worker child processes under a master: real processes, real signals, a
real redis-server. `greenq run` is started as a subprocess; the tests that
need events embed the master in this (monkey-patched) test process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import gevent
import pytest

import greenq
from conftest import TASKS, wait_until
from processes import alive, title, worker_children
from queue_state import assert_queue_empty, queued_ids, unfinished, unfinished_records

GREENQ = [sys.executable, "-m", "greenq"]


class Run:
    """One `greenq run` subprocess, its stderr in a file."""

    def __init__(self, tmp_path, args: list[str], env: dict | None = None) -> None:
        self.log_path = tmp_path / f"greenq-run-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(GREENQ + ["run", *args], stdout=self._log,
                                        stderr=subprocess.STDOUT, env=env)
        self.pid = self.process.pid
        self.seen_workers: set[int] = set()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        pids = worker_children(self.pid)
        self.seen_workers.update(pids)
        return pids

    def wait_ready(self, count: int, timeout: float = 30.0) -> list[int]:
        def ready():
            pids = worker_children(self.pid, ready_only=True)
            self.seen_workers.update(pids)
            return pids if len(pids) == count and len(self.workers()) == count else None
        return wait_until(ready, timeout=timeout, interval=0.05)

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"greenq run did not exit within {timeout}s; its log:\n{self.log()}")

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        wait_until(lambda: text in self.log(), timeout=timeout, interval=0.05)

    def kill_all(self) -> None:
        self.seen_workers.update(worker_children(self.pid))
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for pid in self.seen_workers:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()


@pytest.fixture
def greenq_run(tmp_path, redis_url, namespace):
    """greenq_run(task files..., options...) -> a Run on the test Redis and
    namespace; bare task names are files in tests/tasks/. Killed at teardown."""
    runs = []

    def start(*args: str, env: dict | None = None) -> Run:
        args = [os.path.join(TASKS, a) if a.endswith(".py") and os.sep not in a else a
                for a in args]
        full_env = dict(os.environ)
        full_env.update(env or {})
        run = Run(tmp_path, [*args, "--redis-url", redis_url, "--namespace", namespace],
                  env=full_env)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill_all()


@pytest.fixture
def submitter(make_queue):
    """A queue in the test's namespace that only submits and inspects."""
    return make_queue()


def prefix_of(namespace: str) -> str:
    return f"{namespace}:{{default}}:"


def sleep_params(redis_url, key, n, first=0.0, seconds=0.0) -> dict:
    return {"url": redis_url, "key": key, "n": n, "first": first, "seconds": seconds}


def reclaimed_after_death(error: str) -> bool:
    """Whether a job's error says its child died under it: the master's
    reclaim names the death; a sibling's stale flush ("stale"), which these
    tests' 1 s task timeouts let race it, may come first."""
    return "died (signal 9) running the job; its master reclaimed it" in error or "stale" in error


def started_numbers(r, key) -> list[int]:
    return sorted(int(entry.split()[0]) for entry in r.lrange(key + ":started", 0, -1))


def done_numbers(r, key) -> list[int]:
    return sorted(int(n) for n in r.lrange(key + ":done", 0, -1))


# -- child processes restarted, and what happens to their jobs ------------------


def test_a_child_killed_with_sigkill_is_replaced_and_its_job_is_reclaimed_and_retried(
        make_queue, r, redis_url, namespace):
    queue = make_queue("proc_sleep", child_process_count=2, worker_count=2, flush_stale_timeout=0.5)
    events = []
    for name in ("job_success", "job_retry", "job_fail", "child_restart"):
        queue.on(name, lambda payload, name=name: events.append((name, payload)))
    queue.start()
    key = namespace + ":rec"
    job_id = queue.submit_job("proc.sleep", resource_id="res-1", retries=1,
                              params=sleep_params(redis_url, key, 1, first=60))
    first_run = wait_until(lambda: r.lrange(key + ":started", 0, -1), timeout=30)
    victim = int(first_run[0].split()[1])
    assert victim in worker_children(os.getpid())

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: any(name == "job_success" for name, _ in events), timeout=30)
    wait_until(lambda: len(worker_children(os.getpid(), ready_only=True)) == 2, timeout=30)

    names = [name for name, _ in events]
    assert "job_fail" not in names
    assert names.index("job_retry") < names.index("job_success")
    restart = next(payload for name, payload in events if name == "child_restart")
    assert restart["pid"] == victim
    assert restart["signal"] == signal.SIGKILL
    assert restart["exitcode"] is None
    retry = next(payload for name, payload in events if name == "job_retry")
    assert isinstance(retry, greenq.Job)
    assert retry.id == job_id and retry.retries == 0
    assert reclaimed_after_death(retry.error)
    success = next(payload for name, payload in events if name == "job_success")
    assert success.id == job_id
    assert success.attempts == 2
    assert r.hget(key + ":runs", 1) == b"2"
    assert done_numbers(r, key) == [1]
    assert victim not in worker_children(os.getpid())
    assert_queue_empty(r, prefix_of(namespace))


def test_the_master_reclaims_a_dead_childs_jobs_at_once_and_emits_their_retry_and_fail(
        make_queue, r, namespace, tmp_path):
    # fault.log.patient has a 30 s timeout: no stale flush reclaims its jobs
    # within this test's bounds; only the master can, knowing its child died.
    queue = make_queue("fault_log_sleep", child_process_count=1, worker_count=2)
    events = []
    for name in ("job_success", "job_retry", "job_fail", "child_restart"):
        queue.on(name, lambda payload, name=name: events.append((name, payload)))
    queue.start()
    log = tmp_path / "side.log"
    retried = queue.submit_job("fault.log.patient", resource_id="a", retries=1,
                               params={"log": str(log), "n": 0, "first": 60})
    failed = queue.submit_job("fault.log.patient", resource_id="b",
                              params={"log": str(log), "n": 1, "first": 60})
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) == 2, timeout=30)
    victim = int(log.read_text().split()[1])

    os.kill(victim, signal.SIGKILL)

    names = lambda: [name for name, _ in events]  # noqa: E731
    wait_until(lambda: {"job_retry", "job_fail"} <= set(names()), timeout=10)
    retry = next(payload for name, payload in events if name == "job_retry")
    failure = next(payload for name, payload in events if name == "job_fail")
    assert (retry.id, retry.retries, retry.attempts) == (retried, 0, 1)
    assert (failure.id, failure.retries, failure.attempts) == (failed, 0, 1)
    for job in (retry, failure):
        assert f"pid {victim}) died (signal 9) running the job; its master reclaimed it" \
            in job.error
    restart = next(payload for name, payload in events if name == "child_restart")
    assert restart["pid"] == victim
    prefix = prefix_of(namespace)
    assert r.lrange(prefix + "failed", 0, -1) == [failed.encode()]
    assert r.hlen(prefix + "locks") == 1   # b was released; a stays with the retried job
    wait_until(lambda: any(name == "job_success" for name, _ in events), timeout=30)
    assert next(p for name, p in events if name == "job_success").id == retried
    assert names().count("job_retry") == 1 and names().count("job_fail") == 1


def test_a_task_that_kills_its_own_process_gets_its_child_replaced_and_the_job_failed(
        make_queue, r, redis_url, namespace):
    queue = make_queue("proc_suicide", child_process_count=2, worker_count=1, flush_stale_timeout=0.5)
    events = []
    for name in ("job_success", "job_retry", "job_fail", "child_restart"):
        queue.on(name, lambda payload, name=name: events.append((name, payload)))
    queue.start()
    key = namespace + ":suicide"
    job_id = queue.submit_job("proc.suicide", resource_id="res-1",
                              params={"url": redis_url, "key": key, "deaths": 99})

    wait_until(lambda: any(name == "job_fail" for name, _ in events), timeout=30)
    wait_until(lambda: any(name == "child_restart" for name, _ in events), timeout=30)

    dead = int(r.lrange(key + ":pids", 0, -1)[0])
    restart = next(payload for name, payload in events if name == "child_restart")
    assert restart["pid"] == dead
    assert restart["signal"] == signal.SIGKILL
    failure = next(payload for name, payload in events if name == "job_fail")
    assert failure.id == job_id
    assert failure.attempts == 1
    assert reclaimed_after_death(failure.error)
    assert [name for name, _ in events if name in ("job_retry", "job_success")] == []
    assert r.get(key + ":runs") == b"1"
    prefix = prefix_of(namespace)
    assert r.lrange(prefix + "failed", 0, -1) == [job_id.encode()]
    assert r.hlen(prefix + "locks") == 0
    [failed] = queue.failed_jobs()
    assert failed.id == job_id and failed.resource_id == "res-1"
    wait_until(lambda: len(worker_children(os.getpid(), ready_only=True)) == 2, timeout=30)
    assert dead not in worker_children(os.getpid())


def test_a_task_that_kills_its_own_process_once_succeeds_on_its_retry(
        make_queue, r, redis_url, namespace):
    queue = make_queue("proc_suicide", child_process_count=1, worker_count=1, flush_stale_timeout=0.5)
    events = []
    for name in ("job_success", "job_retry", "job_fail", "child_restart"):
        queue.on(name, lambda payload, name=name: events.append((name, payload)))
    queue.start()
    key = namespace + ":suicide"
    job_id = queue.submit_job("proc.suicide", resource_id="res-1", retries=1,
                              params={"url": redis_url, "key": key, "deaths": 1})

    wait_until(lambda: any(name == "job_success" for name, _ in events), timeout=30)

    names = [name for name, _ in events if name != "child_restart"]
    assert names == ["job_retry", "job_success"]
    pids = [int(pid) for pid in r.lrange(key + ":pids", 0, -1)]
    assert len(pids) == 2 and pids[0] != pids[1]
    restart = next(payload for name, payload in events if name == "child_restart")
    assert restart["pid"] == pids[0] and restart["signal"] == signal.SIGKILL
    success = next(payload for name, payload in events if name == "job_success")
    assert success.id == job_id and success.attempts == 2 and success.retries == 0
    assert r.get(key + ":runs") == b"2"
    assert r.lrange(key + ":done", 0, -1) == [b"2"]
    assert_queue_empty(r, prefix_of(namespace))


@pytest.mark.parametrize("how, children, last", [
    ("raise", 2, "could not load its tasks or reach Redis"),
    ("exit", 1, "exit status 1"),
])
def test_children_that_crash_at_import_do_not_fork_loop_and_the_master_exits_with_status_3(
        greenq_run, tmp_path, r, namespace, how, children, last):
    boots = tmp_path / "boots"
    run = greenq_run("proc_boot_crash.py", "-c", str(children),
                     env={"PROC_BOOT_CRASH_LOG": str(boots), "PROC_BOOT_CRASH_HOW": how})

    assert run.wait(60) == 3

    log = run.log()
    spawned = [int(pid) for pid in boots.read_text().split()]
    assert 2 <= len(spawned) <= 5
    assert log.count("started worker child") == len(spawned)
    assert 1 <= log.count(") died (") <= 5
    stop_lines = [line for line in log.splitlines() if "stopping: worker children died" in line]
    assert len(stop_lines) == 1
    assert "in a row before they were ready" in stop_lines[0]
    assert f"(last: {last})" in stop_lines[0]
    assert not any(alive(pid) for pid in spawned)


def test_an_embedded_master_whose_children_keep_dying_at_boot_reports_child_gave_up(make_queue):
    from greenq.errors import ChildGaveUp, GreenQError

    queue = make_queue("proc_boot_crash", child_process_count=1, worker_count=1)
    errors = []
    queue.on("error", errors.append)
    queue.start()

    wait_until(lambda: queue._runner.failed.is_set(), timeout=60)

    wait_until(lambda: errors, timeout=5)
    [error] = errors
    assert isinstance(error, ChildGaveUp) and isinstance(error, GreenQError)
    assert "5 times in a row before they were ready" in str(error)


def test_a_killed_master_leaves_no_orphans_and_its_running_job_goes_back_to_the_queue(
        greenq_run, submitter, r, redis_url, namespace):
    run = greenq_run("proc_sleep.py", "-c", "2", "-w", "2")
    children = run.wait_ready(2)
    key = namespace + ":rec"
    job_id = submitter.submit_job("proc.sleep", params=sleep_params(redis_url, key, 1, first=60))
    wait_until(lambda: r.llen(key + ":started") == 1, timeout=30)

    os.kill(run.pid, signal.SIGKILL)
    run.wait(10)

    wait_until(lambda: not any(alive(pid) for pid in children), timeout=10)
    prefix = prefix_of(namespace)
    wait_until(lambda: queued_ids(r, prefix) == [job_id.encode()], timeout=10)
    assert r.hget(prefix + f"job:{job_id}", "state") == b"pending"
    assert r.hget(prefix + f"job:{job_id}", "attempts") == b"0"
    assert int(r.hget(prefix + "counts", "active") or 0) == 0
    assert r.llen(key + ":done") == 0


def test_a_task_that_keeps_killing_its_process_ends_in_the_failed_queue_and_the_master_keeps_going(
        greenq_run, submitter, r, redis_url, namespace):
    run = greenq_run("proc_suicide.py", "-c", "1", "-w", "1", "--flush-stale-timeout", "0.5")
    key = namespace + ":suicide"
    job_id = submitter.submit_job("proc.suicide", retries=2,
                                  params={"url": redis_url, "key": key, "deaths": 99})

    prefix = prefix_of(namespace)
    wait_until(lambda: r.llen(prefix + "failed") == 1, timeout=60)

    assert r.lrange(prefix + "failed", 0, -1) == [job_id.encode()]
    record = r.hgetall(prefix + f"job:{job_id}")
    assert record[b"attempts"] == b"3" and record[b"retries"] == b"0"
    assert reclaimed_after_death(record[b"error"].decode())
    assert r.get(key + ":runs") == b"3"
    dead = [int(pid) for pid in r.lrange(key + ":pids", 0, -1)]
    assert len(set(dead)) == 3
    log = run.log()
    for pid in dead:
        assert f"(pid {pid}) died (signal 9)" in log
    [survivor] = run.wait_ready(1)
    assert survivor not in dead
    assert run.process.poll() is None
    run.send(signal.SIGTERM)
    assert run.wait(30) == 0


def test_an_idle_child_killed_from_outside_is_replaced_under_the_same_index(greenq_run, namespace):
    run = greenq_run("proc_sleep.py", "-c", "2", "-w", "3")
    before = run.wait_ready(2)
    victim = next(pid for pid in before if title(pid).startswith("greenq: worker 2/2 "))

    os.kill(victim, signal.SIGKILL)

    after = wait_until(lambda: (pids := worker_children(run.pid, ready_only=True)) and len(pids) == 2
                       and victim not in pids and pids, timeout=30)
    replacement = (set(after) - set(before)).pop()
    assert title(replacement) == f"greenq: worker 2/2 [{namespace}:default] 0/3 busy"
    run.wait_log(f"worker child 2 (pid {victim}) died (signal 9)")
    run.send(signal.SIGTERM)
    assert run.wait(30) == 0


def test_a_child_that_exits_with_a_status_is_reported_with_that_exit_code(
        make_queue, r, redis_url, namespace):
    queue = make_queue("proc_suicide", child_process_count=1, worker_count=1, flush_stale_timeout=0.5)
    events = []
    for name in ("job_success", "job_retry", "job_fail", "child_restart"):
        queue.on(name, lambda payload, name=name: events.append((name, payload)))
    queue.start()
    key = namespace + ":suicide"
    job_id = queue.submit_job("proc.suicide", retries=1,
                              params={"url": redis_url, "key": key, "deaths": 1, "exit": 7})

    wait_until(lambda: any(name == "job_success" for name, _ in events), timeout=30)

    restart = next(payload for name, payload in events if name == "child_restart")
    assert restart["exitcode"] == 7
    assert restart["signal"] is None
    assert restart["pid"] == int(r.lrange(key + ":pids", 0, 0)[0])
    assert [(name, p.id) for name, p in events if name != "child_restart"] == \
        [("job_retry", job_id), ("job_success", job_id)]


def test_a_child_killed_in_the_middle_of_many_jobs_loses_none_of_them(
        make_queue, r, redis_url, namespace):
    queue = make_queue("proc_sleep", child_process_count=2, worker_count=20, flush_stale_timeout=0.5)
    succeeded, failed = [], []
    queue.on("job_success", lambda job: succeeded.append(job.id))
    queue.on("job_fail", failed.append)
    queue.start()
    key = namespace + ":rec"
    ids = queue.submit_jobs([{"task_id": "proc.sleep", "retries": 1,
                              "resource_id": f"res-{n % 20}",
                              "params": sleep_params(redis_url, key, n, first=0.3, seconds=0.3)}
                             for n in range(100)])
    wait_until(lambda: r.llen(key + ":done") >= 20, timeout=30)

    def running_now():  # started (read first), and not done (read after)
        started = [entry.split() for entry in r.lrange(key + ":started", 0, -1)]
        done = set(done_numbers(r, key))
        return [entry for entry in started if int(entry[0]) not in done]
    interrupted, victim = map(int, wait_until(running_now, timeout=10)[0])

    os.kill(victim, signal.SIGKILL)

    # Wait on Redis, not on events: a job_success the killed child had committed
    # but not yet forwarded to the master is never delivered (see the report).
    prefix = prefix_of(namespace)
    wait_until(lambda: sorted(set(done_numbers(r, key))) == list(range(100))
               and not unfinished_records(r, prefix), timeout=60)
    assert failed == []
    assert len(succeeded) == len(set(succeeded)) and set(succeeded) <= set(ids)
    runs = {int(n): int(count) for n, count in r.hgetall(key + ":runs").items()}
    assert set(runs) == set(range(100)) and max(runs.values()) == 2
    assert runs[interrupted] == 2
    assert_queue_empty(r, prefix_of(namespace))


def test_a_success_a_child_committed_just_before_it_died_still_reaches_the_master(
        make_queue, r, redis_url, namespace):
    queue = make_queue("proc_race", child_process_count=1, worker_count=2, flush_stale_timeout=0.5)
    events = []
    for name in ("job_success", "job_fail", "child_restart"):
        queue.on(name, lambda payload, name=name: events.append((name, payload)))
    queue.start()
    prefix = prefix_of(namespace)
    common = {"url": redis_url, "prefix": prefix, "marker": namespace + ":quick-ran"}
    killer = queue.submit_job("proc.race", params={**common, "role": "killer"})
    quick = queue.submit_job("proc.race", params={**common, "role": "quick"})

    wait_until(lambda: any(name == "job_fail" for name, _ in events), timeout=30)
    assert not unfinished(r, prefix + f"job:{quick}")  # its success is in Redis
    assert r.lrange(prefix + "failed", 0, -1) == [killer.encode()]
    assert any(name == "child_restart" for name, _ in events)

    wait_until(lambda: [p.id for name, p in events if name == "job_success"] == [quick], timeout=5)


def test_a_handler_registered_after_start_gets_the_childrens_events(make_queue):
    queue = make_queue("proc_outcome", child_process_count=1, worker_count=2)
    queue.start()
    first = queue.submit_job("proc.outcome")
    wait_until(lambda: queue.stats()["pending"] == 0 and queue.stats()["active"] == 0, timeout=30)

    done = []
    queue.on("job_success", done.append)
    second = queue.submit_job("proc.outcome", params={"n": 2})

    wait_until(lambda: done, timeout=30)
    assert [job.id for job in done] == [second]
    assert first != second


# -- signals to `greenq run` ------------------------------------------------------


def test_sigterm_lets_running_jobs_finish_then_exits_0(greenq_run, submitter, r, redis_url, namespace):
    run = greenq_run("proc_sleep.py", "-c", "2", "-w", "2")
    run.wait_ready(2)
    key = namespace + ":rec"
    submitter.submit_jobs([{"task_id": "proc.sleep", "params": sleep_params(redis_url, key, n, first=1.5)}
                           for n in range(4)])
    wait_until(lambda: r.llen(key + ":started") == 4, timeout=30)
    assert r.llen(key + ":done") == 0

    run.send(signal.SIGTERM)

    assert run.wait(30) == 0
    assert done_numbers(r, key) == [0, 1, 2, 3]
    assert started_numbers(r, key) == [0, 1, 2, 3]
    assert_queue_empty(r, prefix_of(namespace))
    assert "SIGTERM: graceful shutdown" in run.log()


@pytest.mark.parametrize("children", [1, 0], ids=["one-child", "no-child"])
def test_a_second_sigint_gives_running_jobs_back_uncounted_for_the_next_worker(
        greenq_run, submitter, r, redis_url, namespace, children):
    run = greenq_run("proc_sleep.py", "-c", str(children), "-w", "3")
    if children:
        run.wait_ready(children)
    key = namespace + ":rec"
    ids = submitter.submit_jobs([{"task_id": "proc.sleep",
                                  "params": sleep_params(redis_url, key, n, first=60)}
                                 for n in range(3)])
    wait_until(lambda: r.llen(key + ":started") == 3, timeout=30)

    run.send(signal.SIGINT)
    run.wait_log("SIGINT: graceful shutdown")
    run.send(signal.SIGINT)

    assert run.wait(15) == 0
    assert "SIGINT again: giving running jobs back" in run.log()
    prefix = prefix_of(namespace)
    assert sorted(r.lrange(prefix + "pending", 0, -1)) == sorted(i.encode() for i in ids)
    for job_id in ids:
        record = r.hgetall(prefix + f"job:{job_id}")
        assert record[b"state"] == b"pending"
        assert record[b"attempts"] == b"0"
        assert record.get(b"retries", b"0") == b"0"  # at its default: left out
    assert r.llen(prefix + "failed") == 0
    assert int(r.hget(prefix + "counts", "active") or 0) == 0
    assert r.llen(key + ":done") == 0

    # The next worker runs them (each job's second run does not sleep).
    again = greenq_run("proc_sleep.py", "-c", "1", "-w", "3")
    wait_until(lambda: r.llen(key + ":done") == 3, timeout=30)
    assert done_numbers(r, key) == [0, 1, 2]
    again.send(signal.SIGTERM)
    assert again.wait(30) == 0
    assert_queue_empty(r, prefix_of(namespace))


def test_sighup_replaces_the_children_and_every_job_completes_exactly_once(
        greenq_run, submitter, r, redis_url, namespace):
    run = greenq_run("proc_sleep.py", "-c", "2", "-w", "5")
    before = run.wait_ready(2)
    key = namespace + ":rec"
    submitter.submit_jobs([{"task_id": "proc.sleep",
                            "params": sleep_params(redis_url, key, n, first=1.0, seconds=1.0)}
                           for n in range(20)])
    wait_until(lambda: r.llen(key + ":started") >= 5, timeout=30)

    run.send(signal.SIGHUP)

    wait_until(lambda: r.llen(key + ":done") >= 20, timeout=60)
    after = wait_until(lambda: (pids := worker_children(run.pid, ready_only=True)) and len(pids) == 2
                       and not set(pids) & set(before) and pids, timeout=30)
    # An old child may still be committing its last outcomes when its
    # replacement is ready; it must exit soon after.
    wait_until(lambda: not any(alive(pid) for pid in before), timeout=30)
    assert len(after) == 2
    assert done_numbers(r, key) == list(range(20))
    assert started_numbers(r, key) == list(range(20))
    assert all(runs == b"1" for runs in r.hgetall(key + ":runs").values())
    assert "SIGHUP: replacing children one by one" in run.log()
    assert ") died (" not in run.log()
    run.send(signal.SIGTERM)
    assert run.wait(30) == 0
    assert_queue_empty(r, prefix_of(namespace))


RELOAD_TASK = """\
import os

import redis

id = "reload.probe"
timeout = 1.0
VERSION = {version!r}


def perform(params):
    client = redis.Redis.from_url(params["url"])
    client.rpush(params["key"], f"{{VERSION}} {{os.getpid()}}")
    client.close()
"""


def test_a_sighup_with_broken_task_code_keeps_the_old_children_and_a_later_one_with_fixed_code_succeeds(
        greenq_run, tmp_path, submitter, r, redis_url, namespace):
    tasks = tmp_path / "reload_tasks.py"
    tasks.write_text(RELOAD_TASK.format(version="one"))
    run = greenq_run(str(tasks), "-c", "2", "-w", "2")
    old = run.wait_ready(2)
    key = namespace + ":versions"

    def versions_after(n: int) -> list[tuple[str, int]]:
        submitter.submit_jobs([{"task_id": "reload.probe", "params": {"url": redis_url, "key": key}}
                               for _ in range(n)])
        entries = wait_until(lambda: (got := r.lrange(key, 0, -1)) and len(got) == n and got,
                             timeout=30)
        r.delete(key)
        return [(version, int(pid)) for version, pid in (e.decode().split() for e in entries)]

    assert {version for version, _ in versions_after(4)} == {"one"}

    tasks.write_text(RELOAD_TASK.format(version="two") + "def broken(:\n")
    run.send(signal.SIGHUP)
    wait_until(lambda: "reload failed" in run.log() or run.process.poll() is not None, timeout=30)
    gevent.sleep(3)  # a restart loop would have forked again and again by now

    assert run.process.poll() is None, run.log()
    assert run.workers() == old
    log = run.log()
    failures = [line for line in log.splitlines() if "reload failed" in line and " ERROR " in line]
    assert len(failures) == 1, log
    assert "SyntaxError" in failures[0] and "old children keep running" in failures[0]
    # The replacement says why in one line (file and line), not a traceback.
    assert "Traceback" not in log
    assert any("worker child could not start: cannot load task file" in line
               and "reload_tasks.py, line 14" in line for line in log.splitlines()), log
    assert log.count("started worker child") == 3  # two at start, one replacement tried
    assert ") died (" not in log
    ran = versions_after(6)
    assert {version for version, _ in ran} == {"one"}
    assert {pid for _, pid in ran} <= set(old)

    tasks.write_text(RELOAD_TASK.format(version="three"))
    run.send(signal.SIGHUP)
    new = wait_until(lambda: (pids := worker_children(run.pid, ready_only=True)) and len(pids) == 2
                     and not set(pids) & set(old) and pids, timeout=30)
    wait_until(lambda: not any(alive(pid) for pid in old), timeout=30)
    ran = versions_after(6)
    assert {version for version, _ in ran} == {"three"}
    assert {pid for _, pid in ran} <= set(new)
    run.send(signal.SIGTERM)
    assert run.wait(30) == 0


def test_sigttin_adds_a_child_and_sigttou_removes_one_but_never_the_last(
        greenq_run, submitter, r, redis_url, namespace):
    run = greenq_run("proc_sleep.py", "-c", "1", "-w", "2")
    [first] = run.wait_ready(1)

    run.send(signal.SIGTTIN)
    two = run.wait_ready(2)
    assert first in two
    run.send(signal.SIGTTIN)
    three = run.wait_ready(3)
    assert set(two) < set(three)

    run.send(signal.SIGTTOU)
    wait_until(lambda: len(run.workers()) == 2, timeout=20)
    run.send(signal.SIGTTOU)
    wait_until(lambda: len(run.workers()) == 1, timeout=20)
    [last] = run.workers()
    removed = set(three) - {last}
    assert not any(alive(pid) for pid in removed)

    run.send(signal.SIGTTOU)
    run.wait_log("SIGTTOU ignored: keeping the last worker child")
    assert run.workers() == [last]

    key = namespace + ":rec"
    submitter.submit_job("proc.sleep", params=sleep_params(redis_url, key, 7))
    wait_until(lambda: r.llen(key + ":done") == 1, timeout=30)
    assert r.lrange(key + ":started", 0, -1) == [f"7 {last}".encode()]
    assert ") died (" not in run.log()
    run.send(signal.SIGTERM)
    assert run.wait(30) == 0


def test_a_shutdown_during_a_reload_stops_the_booting_replacement_and_reports_no_failure(
        make_queue, tmp_path, monkeypatch):
    flag = tmp_path / "slow-boot"
    monkeypatch.setenv("PROC_SLOW_BOOT_FLAG", str(flag))
    queue = make_queue("proc_slow_boot", child_process_count=1, worker_count=1)
    errors = []
    queue.on("error", errors.append)
    queue.start()
    master = queue._runner
    [old] = wait_until(lambda: worker_children(os.getpid(), ready_only=True), timeout=30)
    flag.write_text("")
    reloading = gevent.spawn(master.reload)
    candidate = wait_until(lambda: master.candidate, timeout=10)
    wait_until(lambda: title(candidate.pid).endswith("booting"), timeout=10)

    began = time.monotonic()
    queue.shutdown()
    took = time.monotonic() - began

    assert took < 15  # the replacement was stopped, not waited for (its import takes 60 s)
    reloading.join(5)
    assert reloading.successful()
    assert errors == []
    assert not alive(old) and not alive(candidate.pid)
    assert worker_children(os.getpid()) == []


def test_after_sigttin_and_sigttou_every_process_title_shows_the_new_number_of_children(
        greenq_run, namespace):
    run = greenq_run("proc_sleep.py", "-c", "1", "-w", "2")
    run.wait_ready(1)

    def titles() -> list[str]:
        return sorted(title(pid) for pid in run.workers())

    run.send(signal.SIGTTIN)
    run.wait_ready(2)
    run.send(signal.SIGTTIN)
    run.wait_ready(3)
    wait_until(lambda: titles() == [f"greenq: worker {n}/3 [{namespace}:default] 0/2 busy"
                                    for n in (1, 2, 3)], timeout=10)
    assert title(run.pid) == f"greenq: master [{namespace}:default] 3 children"

    run.send(signal.SIGTTOU)
    wait_until(lambda: titles() == [f"greenq: worker {n}/2 [{namespace}:default] 0/2 busy"
                                    for n in (1, 2)], timeout=20)
    assert title(run.pid) == f"greenq: master [{namespace}:default] 2 children"
    run.send(signal.SIGTTOU)
    wait_until(lambda: title(run.pid) == f"greenq: master [{namespace}:default] 1 child",
               timeout=20)
    run.send(signal.SIGTERM)
    assert run.wait(30) == 0


def test_the_master_forgets_retired_children_once_they_have_exited(make_queue):
    queue = make_queue("proc_outcome", child_process_count=1, worker_count=2)
    queue.start()
    master = queue._runner
    wait_until(lambda: len(worker_children(os.getpid(), ready_only=True)) == 1, timeout=30)
    retired = []

    for _ in range(2):
        master.grow()
        wait_until(lambda: len(worker_children(os.getpid(), ready_only=True)) == 2, timeout=30)
        retired.append(master.children[max(master.children)].pid)
        master.shrink()
    retired += [child.pid for child in master.children.values()]
    master.reload()

    wait_until(lambda: not any(alive(pid) for pid in retired), timeout=30)
    assert len(retired) == 3
    wait_until(lambda: master.retired == [], timeout=5)
    [survivor] = master.children.values()
    assert survivor.pid not in retired
    assert worker_children(os.getpid()) == [survivor.pid]


def test_process_titles_show_the_role_the_queue_and_the_load(
        greenq_run, submitter, r, redis_url, namespace):
    run = greenq_run("proc_sleep.py", "-c", "2", "-w", "10")
    pids = run.wait_ready(2)

    titles = sorted(title(pid) for pid in pids)
    assert titles == [f"greenq: worker {n}/2 [{namespace}:default] 0/10 busy" for n in (1, 2)]
    assert title(run.pid) == f"greenq: master [{namespace}:default] 2 children"

    key = namespace + ":rec"
    submitter.submit_job("proc.sleep", params=sleep_params(redis_url, key, 1, first=60))
    wait_until(lambda: r.llen(key + ":started") == 1, timeout=30)
    busy_pid = int(r.lrange(key + ":started", 0, -1)[0].split()[1])
    wait_until(lambda: title(busy_pid).endswith("1/10 busy"), timeout=10)
    assert title(busy_pid) in (f"greenq: worker 1/2 [{namespace}:default] 1/10 busy",
                               f"greenq: worker 2/2 [{namespace}:default] 1/10 busy")

    run.send(signal.SIGTERM)
    run.wait_log("SIGTERM: graceful shutdown")
    run.send(signal.SIGTERM)
    assert run.wait(15) == 0
    assert r.llen(prefix_of(namespace) + "pending") == 1


# -- events from children --------------------------------------------------------


def test_events_from_children_reach_the_masters_handlers_as_jobs_and_exceptions(
        make_queue, r, namespace):
    # No grace for unknown tasks (the children apply the master's): it fails at once.
    queue = make_queue("proc_outcome", child_process_count=2, worker_count=2, unknown_task_grace=0)
    events = {name: [] for name in ("job_success", "job_fail", "job_retry", "error")}
    for name, seen in events.items():
        queue.on(name, seen.append)
    queue.start()
    ok_id = queue.submit_job("proc.outcome", params={"fail": None, "tag": ["a", 1]})
    bad_id = queue.submit_job("proc.outcome", params={"fail": "boom"}, retries=1, resource_id="r")
    unknown_id = queue.submit_job("proc.unknown", params={"x": 1})

    wait_until(lambda: len(events["job_fail"]) == 2 and events["job_success"] and events["error"],
               timeout=30)

    [success] = events["job_success"]
    assert isinstance(success, greenq.Job)
    assert (success.id, success.task_id, success.params, success.attempts, success.error) == \
        (ok_id, "proc.outcome", {"fail": None, "tag": ["a", 1]}, 1, None)
    [retry] = events["job_retry"]
    assert isinstance(retry, greenq.Job)
    assert retry.id == bad_id and retry.resource_id == "r" and retry.retries == 0
    assert "ValueError: asked to fail: boom" in retry.error
    fails = {job.id: job for job in events["job_fail"]}
    assert set(fails) == {bad_id, unknown_id}
    assert all(isinstance(job, greenq.Job) for job in fails.values())
    assert fails[bad_id].attempts == 2 and "ValueError: asked to fail: boom" in fails[bad_id].error
    assert fails[unknown_id].task_id == "proc.unknown"
    unknown_errors = [e for e in events["error"] if isinstance(e, greenq.UnknownTaskError)]
    assert len(unknown_errors) == 1
    assert unknown_id in str(unknown_errors[0]) and "proc.unknown" in str(unknown_errors[0])
    assert sorted(job.id for job in queue.failed_jobs()) == sorted([bad_id, unknown_id])


def test_an_event_holding_values_the_link_cannot_carry_reaches_the_master_with_their_repr(
        make_queue):
    queue = make_queue("proc_mutate", "proc_outcome", child_process_count=1, worker_count=1)
    done, errors = [], []
    queue.on("job_success", done.append)
    queue.on("error", errors.append)
    queue.start()
    ids = [queue.submit_job("proc.mutate", params={"add": ["exotic"]}),
           queue.submit_job("proc.mutate", params={"add": ["tuple_key"]}),
           queue.submit_job("proc.mutate", params={"add": ["exotic", "tuple_key"]}),
           queue.submit_job("proc.outcome", params={"n": 4})]

    wait_until(lambda: len(done) == 4, timeout=30)

    assert errors == []
    assert [job.id for job in done] == ids
    exotic = {
        "when": "datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)",
        "big": str(2**70),
        "tags": "{'a'}",
        "nested": {"thing": "<Thing 7>", "kept": [1, b"\x00", None, 2.5]},
        "unprintable": "<Unprintable object; its repr raised RuntimeError>",
        "lone": "'\\ud800'",
    }
    assert done[0].params == {"add": ["exotic"], **exotic}
    assert done[1].params == {"add": ["tuple_key"], (1, ("a", 2)): "tuple key"}
    assert done[2].params == {"add": ["exotic", "tuple_key"], **exotic,
                              (1, ("a", 2)): "tuple key"}
    assert done[3].params == {"n": 4}


def test_events_children_send_just_before_the_masters_shutdown_all_reach_its_handlers(
        make_queue, r, redis_url, namespace):
    queue = make_queue("proc_sleep", child_process_count=2, worker_count=100)
    succeeded = []

    def slow_handler(job):
        # The first call holds the hub (as a handler writing to a file, or a
        # DB driver without gevent support, can) while the children send their
        # last events and exit: the master reads their links only afterwards.
        if not succeeded:
            until = time.perf_counter() + 2.0
            while time.perf_counter() < until:
                pass
        succeeded.append(job.id)

    queue.on("job_success", slow_handler)
    queue.start()
    key = namespace + ":rec"
    ids = queue.submit_jobs([{"task_id": "proc.sleep",
                              "params": sleep_params(redis_url, key, n, first=0.5)}
                             for n in range(200)])
    wait_until(lambda: r.llen(key + ":started") == 200, timeout=30)

    queue.shutdown()

    assert r.llen(key + ":done") == 200
    assert queue.stats()["active"] == 0 and queue.stats()["pending"] == 0
    assert len(succeeded) == 200
    assert sorted(succeeded) == sorted(ids)


def test_children_of_an_embedded_master_import_a_task_module_the_master_found_on_its_sys_path(
        make_queue):
    # tests/ is on this process' sys.path (conftest puts it there), as an
    # application's own directories are; the module is registered by name.
    queue = make_queue("tasks.proc_outcome", child_process_count=1, worker_count=2)
    done, errors = [], []
    queue.on("job_success", done.append)
    queue.on("error", errors.append)
    queue.start()
    job_id = queue.submit_job("proc.outcome", params={"n": 1})

    wait_until(lambda: done or errors, timeout=30)

    assert errors == []
    assert [job.id for job in done] == [job_id]


def test_an_embedded_master_shutdown_with_a_timeout_gives_running_jobs_back(
        make_queue, r, redis_url, namespace):
    queue = make_queue("proc_sleep", child_process_count=1, worker_count=2)
    queue.start()
    key = namespace + ":rec"
    job_id = queue.submit_job("proc.sleep", resource_id="res-1",
                              params=sleep_params(redis_url, key, 1, first=60))
    wait_until(lambda: r.llen(key + ":started") == 1, timeout=30)
    [child] = worker_children(os.getpid())

    began = time.monotonic()
    queue.shutdown(timeout=0.5)
    took = time.monotonic() - began

    assert took < 15
    assert not alive(child)
    prefix = prefix_of(namespace)
    assert r.lrange(prefix + "pending", 0, -1) == [job_id.encode()]
    assert r.hget(prefix + f"job:{job_id}", "attempts") == b"0"
    assert r.hget(prefix + "locks", "res-1") == job_id.encode()
    assert r.llen(key + ":done") == 0


# -- the seed's child-process behaviours -------------------------------------------


def test_twenty_read_modify_write_jobs_on_one_resource_over_eight_children_count_to_twenty(
        greenq_run, submitter, r, redis_url, namespace):
    run = greenq_run("proc_counter.py", "-c", "8", "-w", "1")
    key = namespace + ":counter"
    submitter.submit_jobs([{"task_id": "proc.rmw", "resource_id": "the-one",
                            "params": {"url": redis_url, "key": key}} for _ in range(20)])
    wait_until(lambda: r.llen(key + ":done") == 20, timeout=60)

    assert r.get(key) == b"20"
    run.send(signal.SIGTERM)
    assert run.wait(30) == 0
    assert r.get(key) == b"20"
    assert_queue_empty(r, prefix_of(namespace))


def test_twenty_thousand_jobs_through_four_children_give_twenty_thousand_success_events(
        make_queue, r, namespace):
    queue = make_queue("proc_outcome", child_process_count=4, worker_count=100)
    succeeded = []
    queue.on("job_success", lambda job: succeeded.append(job.id))
    queue.start()
    began = time.monotonic()
    ids = queue.submit_jobs([{"task_id": "proc.outcome"} for _ in range(20_000)])

    wait_until(lambda: len(succeeded) >= 20_000, timeout=150, interval=0.1)
    took = time.monotonic() - began
    print(f"20,000 jobs through 4 children: {took:.1f}s")

    assert len(succeeded) == 20_000
    assert set(succeeded) == set(ids)
    assert queue.stats()["failed"] == 0
    assert_queue_empty(r, prefix_of(namespace))
