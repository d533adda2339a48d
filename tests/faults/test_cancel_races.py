"""Races of cancel() (issue 13), each with real worker processes: cancel
against a job's finish, against a stale flush, against fetches, against
coalescing submits, against the death of the job's process, and against
a shutdown that gives the job back.

The witness is the log of tests/tasks/cancel_log.py: one line per start,
end, cancel or stop of a run, with CLOCK_MONOTONIC times (one clock for
every process of the machine) and the run's fencing token, written
whatever Redis says afterwards."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, namedtuple

import gevent
import pytest

from conftest import wait_until
from queue_state import assert_queue_empty, unfinished_records
from sidelog import ROOT, TESTS, EventWorker, GreenqRun

pytestmark = pytest.mark.timeout(240)

TASK_FILE = os.path.join(TESTS, "tasks", "cancel_log.py")
TASK, QUICK = "cancel.log", "cancel.log.quick"
ENDED = ("succeeded", "failed", "cancelled")

Line = namedtuple("Line", "what id n pid at token")


class Witness:
    """The lines tests/tasks/cancel_log.py appends."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def params(self, n: int, seconds: float = 0.0) -> dict:
        return {"log": self.path, "n": n, "seconds": seconds}

    def lines(self) -> list[Line]:
        try:
            with open(self.path) as file:
                rows = file.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for row in rows:
            what, job_id, n, pid, at, token = row.split()
            out.append(Line(what, job_id, int(n), int(pid), float(at), int(token)))
        return out

    def of(self, job_id: str, what: str | None = None) -> list[Line]:
        return [x for x in self.lines() if x.id == job_id and what in (None, x.what)]

    def count(self, what: str) -> Counter:
        return Counter(x.id for x in self.lines() if x.what == what)

    def runs_one_at_a_time(self, resource_of: dict[str, str]) -> None:
        """No two runs of one resource overlap: each start comes after the
        last line (end, cancel or stop) of the run before it."""
        holder: dict[str, Line] = {}
        for line in sorted(self.lines(), key=lambda x: x.at):
            res = resource_of.get(line.id)
            if res is None:
                continue
            if line.what == "start":
                assert res not in holder, \
                    f"{line.id} started on {res} while {holder[res].id} ran; log:\n{self.dump()}"
                holder[res] = line
            else:
                assert holder.pop(res).id == line.id

    def dump(self) -> str:
        try:
            with open(self.path) as file:
                return file.read()
        except FileNotFoundError:
            return "<no log>"


@pytest.fixture
def witness(tmp_path):
    return Witness(tmp_path / "witness.log")


@pytest.fixture
def prefix(namespace):
    return f"{namespace}:{{default}}:"


def env_with_greenq() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def states(queue, ids) -> dict[str, str | None]:
    out = {}
    for job_id in ids:
        job = queue.get_job(job_id)
        out[job_id] = None if job is None else job.state
    return out


def all_ended(queue, ids) -> bool:
    return all(state in ENDED for state in states(queue, ids).values())


def drained(r, prefix) -> bool:
    return not unfinished_records(r, prefix) and int(r.hget(prefix + "counts", "skipped") or 0) == 0


class Worker(EventWorker):
    """A worker process of cancel_log jobs (sidelog.EVENT_WORKER), started
    and registered; its events in a JSONL file."""

    def __init__(self, tmp_path, url: str, namespace: str, workers: int = 4,
                 stop_timeout: float = 5.0) -> None:
        super().__init__(tmp_path, url, namespace, workers, task_file=TASK_FILE,
                         stop_timeout=stop_timeout, flush_stale_timeout=30.0)
        wait_until(lambda: self.events("started"), timeout=30)
        self.process_id = self.events("started")[0]["process_id"]


# -- cancel against finish -------------------------------------------------------------


def test_a_cancel_racing_the_finish_of_a_job_has_one_winner_and_the_resource_passes_once(
        tmp_path, redis_url, namespace, make_queue, witness, r, prefix):
    """90 jobs, each holding its own resource with a second job behind it,
    are cancelled in random order while they run: a third return at once,
    a third at staggered moments of the cancels' burst, a third run for
    seconds. Each ends succeeded with cancel() False or cancelled with
    cancel() True (never both, whatever the moment), and the job behind it
    runs exactly once, after it."""
    run = GreenqRun(tmp_path, redis_url, namespace, "-c", "2", "-w", "100", task_file=TASK_FILE)
    try:
        run.wait_ready(2)
        q = make_queue()
        count = 90

        def seconds(n):
            return (0.0, 0.006 * n, 5.0)[n % 3]
        rows = []
        for n in range(count):
            rows.append({"task_id": TASK, "resource_id": f"r{n}",
                         "params": witness.params(n, seconds(n))})
            rows.append({"task_id": TASK, "resource_id": f"r{n}",
                         "params": witness.params(1000 + n)})
        ids = q.submit_jobs(rows)
        firsts, seconds_ = ids[0::2], ids[1::2]
        wait_until(lambda: set(firsts) <= set(witness.count("start")), timeout=60)

        said = {}
        for n in random.sample(range(count), count):
            said[firsts[n]] = q.cancel(firsts[n])
            gevent.sleep(random.uniform(0, 0.01))
        wait_until(lambda: all_ended(q, ids), timeout=60)

        resource_of = {job_id: f"r{i // 2}" for i, job_id in enumerate(ids)}
        witness.runs_one_at_a_time(resource_of)
        starts, ends = witness.count("start"), witness.count("end")
        outcome = Counter()
        for n, (first, second) in enumerate(zip(firsts, seconds_)):
            job = q.get_job(first)
            if said[first]:
                assert (job.state, job.result) == ("cancelled", None), (n, job)
                outcome["stopped" if witness.of(first, "cancel") else "cancelled after it returned"] += 1
            else:
                assert (job.state, job.result) == ("succeeded", n), (n, job)
                assert ends[first] == 1
                outcome["finished first"] += 1
            assert starts[first] == 1, witness.dump()
            # the resource passed on once: the job behind ran once, after it
            assert q.get_job(second).state == "succeeded"
            assert (starts[second], ends[second]) == (1, 1), witness.dump()
            last_of_first = max(x.at for x in witness.of(first) if x.what != "start")
            assert witness.of(second, "start")[0].at > last_of_first
        print(dict(outcome))
        assert outcome["finished first"] and outcome["stopped"]
        wait_until(lambda: drained(r, prefix), timeout=30)
        assert_queue_empty(r, prefix)
        assert "LeaseLostError" not in run.output()
    finally:
        run.kill_all()


# -- cancel against stale flush -----------------------------------------------------------


def test_a_cancelled_job_of_a_frozen_process_ends_cancelled_at_the_flush_and_its_late_finish_is_fenced(
        tmp_path, redis_url, namespace, make_queue, witness, r, prefix):
    """The job's process is frozen (SIGSTOP) past the task's 1 s timeout;
    the job is cancelled (its process cannot hear of it), and a stale flush
    from another process reclaims it: cancelled, not retried, its resource
    goes to the next job. Thawed, the frozen run finishes: fenced
    (LeaseLostError), nothing changes."""
    worker = Worker(tmp_path, redis_url, namespace)
    try:
        q = make_queue()
        job_id, behind = q.submit_jobs([
            {"task_id": QUICK, "resource_id": "x", "retries": 2, "params": witness.params(0, 2.5)},
            {"task_id": TASK, "resource_id": "x", "params": witness.params(1)}])
        wait_until(lambda: witness.of(job_id, "start"), timeout=30)
        worker.process.send_signal(signal.SIGSTOP)
        time.sleep(1.6)  # past the 1 s timeout since its last heartbeat

        assert q.cancel(job_id) is True
        assert r.hmget(prefix + f"job:{job_id}", "state", "cancel") == [b"active", b"1"]
        assert q.force_flush_stale_jobs() == 1
        job = q.get_job(job_id)
        assert (job.state, job.retries, job.attempts) == ("cancelled", 2, 1)
        assert job.error.startswith("stale: process " + worker.process_id)
        assert r.hget(prefix + "locks", "x") == behind.encode()
        assert q.get_job(behind).state == "pending"
        assert not r.exists(prefix + "cancels:" + worker.process_id)
        record = r.hgetall(prefix + f"job:{job_id}")

        worker.process.send_signal(signal.SIGCONT)
        wait_until(lambda: q.get_job(behind).state == "succeeded", timeout=30)
        wait_until(lambda: any(e["type"] == "LeaseLostError" and job_id in e["text"]
                               for e in worker.events("error")), timeout=30)
        assert witness.of(job_id, "end")             # the late finish happened...
        assert r.hgetall(prefix + f"job:{job_id}") == record   # ...and changed nothing
        assert witness.count("start")[job_id] == 1   # never run again
        assert (witness.count("start")[behind], witness.count("end")[behind]) == (1, 1)
        assert [e["id"] for e in worker.events("job_success")] == [behind]
        assert not worker.events("job_retry") and not worker.events("job_fail")
        wait_until(lambda: drained(r, prefix), timeout=30)
        assert_queue_empty(r, prefix)
    finally:
        worker.kill()


# -- cancel against fetch --------------------------------------------------------------


def test_no_job_starts_after_a_cancel_of_it_returned_true_while_busy_workers_fetch(
        tmp_path, redis_url, namespace, make_queue, witness, r, prefix):
    """Jobs stream in (half of them on 6 resources) to 2 processes of 3
    workers, always busy, while 3 cancellers cancel recent ones. Each cancel
    runs in MULTI with a read of the queue's lease counter, so the counter
    at the cancel is known: a run of a job whose cancel said True must hold
    a fencing token from before it (it was running already), never a later
    one (a lease after the cancel)."""
    run = GreenqRun(tmp_path, redis_url, namespace, "-c", "2", "-w", "3", task_file=TASK_FILE)
    try:
        run.wait_ready(2)
        q = make_queue()
        q.broker.load_scripts()
        k = q.keys
        sha = q.broker.scripts["cancel"].sha
        count = 300
        submitted: list[str] = []
        resource_of: dict[str, str] = {}
        cancelled: dict[str, tuple[int, int]] = {}   # id -> (cancel's reply, lease counter then)

        def submit():
            for start in range(0, count, 10):
                rows = [{"task_id": TASK, "resource_id": f"r{n % 6}" if n % 2 else None,
                         "params": witness.params(n, 0.01)} for n in range(start, start + 10)]
                for n, job_id in zip(range(start, start + 10), q.submit_jobs(rows)):
                    submitted.append(job_id)
                    if n % 2:
                        resource_of[job_id] = f"r{n % 6}"
                gevent.sleep(0.01)

        def cancel_recent_ones(submitter):
            while not submitter.dead:
                recent = [j for j in submitted[-30:] if j not in cancelled]
                if recent:
                    job_id = random.choice(recent)
                    cancelled[job_id] = (0, 0)   # claimed: no other canceller takes it
                    pipe = r.pipeline(transaction=True)
                    pipe.evalsha(sha, 7, k.locks, k.counts, k.pending, k.held, k.delayed,
                                 k.metrics, k.history, k.prefix, job_id, *q.broker.keep_args)
                    pipe.hget(k.counts, "fence")
                    reply, fence = pipe.execute()
                    cancelled[job_id] = (reply, int(fence or 0))
                gevent.sleep(random.uniform(0, 0.005))

        submitter = gevent.spawn(submit)
        cancellers = [gevent.spawn(cancel_recent_ones, submitter) for _ in range(3)]
        gevent.joinall([submitter, *cancellers], raise_error=True)
        wait_until(lambda: all_ended(q, submitted), timeout=120)

        seen = states(q, submitted)
        starts, ends = witness.count("start"), witness.count("end")
        outcome = Counter()
        for job_id in submitted:
            assert starts[job_id] <= 1, witness.dump()
            reply, fence = cancelled.get(job_id, (None, None))
            if reply == 1:
                assert seen[job_id] == "cancelled"
                for line in witness.of(job_id, "start"):
                    assert line.token <= fence, (
                        f"{job_id} started with lease {line.token} after its cancel "
                        f"(lease counter {fence})")
                outcome["cancelled running" if starts[job_id] else "cancelled queued"] += 1
            else:   # never cancelled, or cancelled after it ended (reply 0)
                assert seen[job_id] == "succeeded" and (starts[job_id], ends[job_id]) == (1, 1)
                outcome["too late" if reply == 0 else "not cancelled"] += 1
        print(dict(outcome))
        assert outcome["cancelled queued"]
        witness.runs_one_at_a_time(resource_of)
        wait_until(lambda: drained(r, prefix), timeout=30)
        assert_queue_empty(r, prefix)
    finally:
        run.kill_all()


# -- cancel against coalesce ------------------------------------------------------------

# Coalescing submits on resource "x", one after the other, each timed with
# CLOCK_MONOTONIC; then the file `done`.
SUBMITTER = r'''
import json, random, sys, time
from greenq import GreenQueue

url, ns, witness, out, count = sys.argv[1:6]
q = GreenQueue(redis_url=url, namespace=ns)
with open(out, "w", buffering=1) as file:
    for seq in range(1, int(count) + 1):
        before = time.monotonic()
        job_id = q.submit_job("cancel.log", resource_id="x", coalesce=True, job_id=f"s{seq}",
                              params={"log": witness, "n": seq, "seconds": 0.02})
        file.write(json.dumps([seq, job_id, before, time.monotonic()]) + "\n")
        time.sleep(random.uniform(0, 0.003))
open(out + ".done", "w").close()
'''

# Cancels jobs of resource "x" (its holder or one waiting behind it, picked
# at random) until the file `done` exists, each call timed.
CANCELLER = r'''
import json, os, random, sys, time
import redis
from greenq import GreenQueue

url, ns, out, done = sys.argv[1:5]
q = GreenQueue(redis_url=url, namespace=ns)
r = redis.Redis.from_url(url)
with open(out, "w", buffering=1) as file:
    while not os.path.exists(done):
        ids = [i for i in [r.hget(q.keys.locks, "x"), *r.lrange(q.keys.wait("x"), 0, -1)] if i]
        if ids:
            job_id = random.choice(ids).decode()
            before = time.monotonic()
            said = q.cancel(job_id)
            file.write(json.dumps([job_id, said, before, time.monotonic()]) + "\n")
        time.sleep(random.uniform(0, 0.01))
'''


def test_coalescing_submits_racing_cancels_land_in_live_jobs_and_the_last_params_run(
        tmp_path, redis_url, namespace, make_queue, witness, r, prefix):
    """A process submits 300 coalescing updates to resource x while another
    cancels x's holder or waiters at random, and a worker runs them. Every
    submit either created a job or landed in one that had neither started
    nor been cancelled when the submit began; every job ran (once) with the
    last params merged into it, unless a cancel stopped it; and an update
    sent once the cancels stopped runs."""
    run = GreenqRun(tmp_path, redis_url, namespace, "-c", "1", "-w", "2", task_file=TASK_FILE)
    submits_path, cancels_path = tmp_path / "submits.jsonl", tmp_path / "cancels.jsonl"
    processes = []
    try:
        run.wait_ready(1)
        q = make_queue()
        count = 300
        processes.append(subprocess.Popen(
            [sys.executable, "-c", SUBMITTER, redis_url, namespace, witness.path,
             str(submits_path), str(count)], env=env_with_greenq()))
        processes.append(subprocess.Popen(
            [sys.executable, "-c", CANCELLER, redis_url, namespace, str(cancels_path),
             str(submits_path) + ".done"], env=env_with_greenq()))
        for process in processes:
            assert process.wait(120) == 0
        final = q.submit_job(TASK, resource_id="x", coalesce=True, job_id="final",
                             params=witness.params(count + 1, 0.02))

        submits = [json.loads(line) for line in submits_path.read_text().splitlines()]
        cancels = [json.loads(line) for line in cancels_path.read_text().splitlines()]
        assert [seq for seq, *_ in submits] == list(range(1, count + 1))
        jobs = sorted({job_id for _, job_id, _, _ in submits} | {final})
        wait_until(lambda: all_ended(q, jobs), timeout=120)

        seen = states(q, jobs)
        cancelled_at = {}   # id -> when the first cancel of it that said True returned
        for job_id, said, _before, after in cancels:
            if said:
                cancelled_at[job_id] = min(after, cancelled_at.get(job_id, after))
            else:
                assert seen.get(job_id) in ENDED   # False: it had ended (it is a job of x)
        merged: dict[str, list[int]] = {}
        for seq, job_id, before, _after in submits:
            merged.setdefault(job_id, []).append(seq)
            if job_id == f"s{seq}":
                continue                          # created a job
            # landed in a live job: not cancelled, not started before this submit began
            assert before < cancelled_at.get(job_id, float("inf")), (seq, job_id)
            started = witness.of(job_id, "start")
            assert not started or before < started[0].at, (seq, job_id)
        merged.setdefault(final, []).append(count + 1)
        starts = witness.count("start")
        for job_id in jobs:
            assert starts[job_id] <= 1, witness.dump()
            if job_id in cancelled_at:
                assert seen[job_id] == "cancelled"
            else:
                assert seen[job_id] == "succeeded" and starts[job_id] == 1
            if starts[job_id]:   # ran with the latest update merged into it
                assert witness.of(job_id, "start")[0].n == max(merged[job_id]), job_id
        assert seen[final] == "succeeded" and witness.of(final, "end")[0].n == count + 1
        witness.runs_one_at_a_time({job_id: "x" for job_id in jobs})
        print(f"{len(jobs)} jobs for {count + 1} submits, {len(cancelled_at)} cancelled")
        assert cancelled_at and len(jobs) < count
        wait_until(lambda: drained(r, prefix), timeout=30)
        assert_queue_empty(r, prefix)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        run.kill_all()


# -- cancel of a job whose process was just killed --------------------------------------


@pytest.mark.parametrize("master", ["paused", "running"])
def test_a_job_whose_process_was_just_killed_and_then_cancelled_ends_cancelled_not_retried(
        tmp_path, redis_url, namespace, make_queue, witness, r, prefix, master):
    """SIGKILL the `greenq run -c 1` child running a job with retries left,
    cancel the job right after: it ends cancelled, never runs again, and its
    resource passes on. "paused": the master is stopped (SIGSTOP) until the
    cancel returned, so its reclaim of the dead child's jobs certainly finds
    the cancel mark; "running": the cancel races the reclaim (which waits
    0.2 s for a late finish): either way, the same end."""
    run = GreenqRun(tmp_path, redis_url, namespace, "-c", "1", "-w", "4", task_file=TASK_FILE)
    try:
        [child] = run.wait_ready(1)
        q = make_queue()
        job_id, behind = q.submit_jobs([
            {"task_id": TASK, "resource_id": "x", "retries": 3, "params": witness.params(0, 60)},
            {"task_id": TASK, "resource_id": "x", "params": witness.params(1)}])
        wait_until(lambda: witness.of(job_id, "start"), timeout=30)
        owner = r.hget(prefix + f"job:{job_id}", "owner").decode()
        if master == "paused":
            run.send(signal.SIGSTOP)
        try:
            os.kill(child, signal.SIGKILL)
            assert q.cancel(job_id) is True
            if master == "paused":
                assert r.hmget(prefix + f"job:{job_id}", "state", "cancel") == [b"active", b"1"]
        finally:
            run.send(signal.SIGCONT)

        wait_until(lambda: q.get_job(job_id).state == "cancelled", timeout=30)
        wait_until(lambda: q.get_job(behind).state == "succeeded", timeout=30)
        job = q.get_job(job_id)
        assert job.attempts == 1
        if master == "paused":   # the master's reclaim ended it, and did not retry it
            assert job.retries == 3 and "its master reclaimed it" in job.error, job
        assert witness.count("start")[job_id] == 1    # never ran again
        assert (witness.count("start")[behind], witness.count("end")[behind]) == (1, 1)
        assert not r.exists(prefix + "cancels:" + owner)
        run.wait_ready(1)   # the dead child was replaced
        wait_until(lambda: drained(r, prefix), timeout=30)
        assert_queue_empty(r, prefix)
        run.send(signal.SIGTERM)
        assert run.wait(30) == 0
    finally:
        if run.process.poll() is None:
            run.send(signal.SIGCONT)
        run.kill_all()


# -- cancel against a shutdown that gives the job back ---------------------------------------


def test_a_cancelled_job_given_back_by_a_shutdown_ends_cancelled_and_never_runs_again(
        tmp_path, redis_url, namespace, make_queue, witness, r, prefix):
    """cancel() marks a running job, and its process is told at its next
    heartbeat (within a second); a SIGTERM with shutdown(timeout=0) right
    after the cancel usually gives the job back first. A job given back
    this way used to return to the queue and run again in full elsewhere;
    it ends cancelled now, whichever came first, and its resource passes on."""
    worker = Worker(tmp_path, redis_url, namespace, stop_timeout=0)
    other = None
    try:
        q = make_queue()
        job_id, behind = q.submit_jobs([
            {"task_id": TASK, "resource_id": "x", "retries": 1, "params": witness.params(0, 60)},
            {"task_id": TASK, "resource_id": "x", "params": witness.params(1)}])
        wait_until(lambda: witness.of(job_id, "start"), timeout=30)
        assert q.cancel(job_id) is True
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(30) == 0

        assert q.get_job(job_id).state == "cancelled"
        assert [e["id"] for e in worker.events("job_cancel")] == [job_id]
        assert not [e for e in worker.events("error")], worker.events("error")
        how = [x.what for x in witness.of(job_id) if x.what != "start"]
        assert how in (["stop"], ["cancel"])
        other = Worker(tmp_path, redis_url, namespace)
        wait_until(lambda: q.get_job(behind).state == "succeeded", timeout=30)
        # A job given back goes to the head of the queue: it would have run first.
        assert witness.count("start")[job_id] == 1
        assert (witness.count("start")[behind], witness.count("end")[behind]) == (1, 1)
        print("given back first" if how == ["stop"] else "the heartbeat came first")
        wait_until(lambda: drained(r, prefix), timeout=30)
        assert_queue_empty(r, prefix)
    finally:
        worker.kill()
        if other is not None:
            other.kill()
