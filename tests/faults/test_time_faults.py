"""Jobs that wait for a time, under faults: a worker killed after its
promoting fetch ran but before it read the reply, Redis restarted with the
AOF while jobs wait, Redis' clock jumping forward (DEBUG SLEEP), a rate
limit held across worker processes, and a delayed job joining its
resource's order across processes.

Each test has its own redis-server and real `greenq run` processes. The
witness is tests/tasks/time_log.py: every run logs its start and end to a
Redis list stamped with Redis TIME, the clock that decides due times too,
so spans from several processes compare on one clock."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter, namedtuple

import gevent
import pytest

from conftest import wait_until
from greenq import GreenQueue
from processes import alive
from redis_server import RedisServer
from sidelog import GreenqRun

pytestmark = pytest.mark.timeout(150)

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME_TASKS = os.path.join(TESTS, "tasks", "time_log.py")
NAMESPACE = "timefault"
LOG = "witness"  # the list time_log.py appends to (outside the queue's keys)

Entry = namedtuple("Entry", "n what us pid")


# -- helpers -------------------------------------------------------------------------


class Witness:
    """The Redis list the witness task logs "<n> start|end <µs> <pid>" to."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.client = server.client()

    def params(self, n: int, **extra) -> dict:
        return {"url": self.server.url, "log": LOG, "n": n, **extra}

    def entries(self) -> list[Entry]:
        out = []
        for line in self.client.lrange(LOG, 0, -1):
            n, what, us, pid = line.decode().split()
            out.append(Entry(int(n), what, int(us), int(pid)))
        return out

    def ended(self) -> Counter:
        return Counter(e.n for e in self.entries() if e.what == "end")

    def assert_each_ran_once(self, numbers) -> None:
        entries = self.entries()
        for what in ("start", "end"):
            counted = Counter(e.n for e in entries if e.what == what)
            assert counted == Counter(numbers), f"each job should {what} once; log: {entries}"

    def spans(self) -> dict[int, tuple[int, int]]:
        """n -> (start µs, end µs) of jobs that ran once."""
        starts = {e.n: e.us for e in self.entries() if e.what == "start"}
        return {e.n: (starts[e.n], e.us) for e in self.entries() if e.what == "end"}

    def assert_in_order_one_at_a_time(self, resources: dict[str, list[int]]) -> None:
        """Per resource: its jobs ran in the given order, each after the
        previous one ended (no overlap), by Redis' clock."""
        spans = self.spans()
        for resource, expected in resources.items():
            ran = sorted((n for n in expected), key=lambda n: spans[n][0])
            assert ran == expected, f"{resource}: ran in order {ran}, expected {expected}"
            for before, after in zip(ran, ran[1:]):
                assert spans[after][0] >= spans[before][1], (
                    f"{resource}: job {after} started before job {before} ended: "
                    f"{spans[before]} {spans[after]}")


def redis_ms(client) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def submitter(server: RedisServer) -> GreenQueue:
    queue = GreenQueue(redis_url=server.url, namespace=NAMESPACE)
    queue.register_task(TIME_TASKS)
    return queue


def started_ms(client, queue: GreenQueue, ids) -> list[int]:
    return [int(client.hget(queue.keys.job(job_id), "started")) for job_id in ids]


def most_in_window(starts: list[int], period_ms: int) -> int:
    """The most starts in any half-open window [t, t + period_ms)."""
    starts, most, low = sorted(starts), 0, 0
    for high, at in enumerate(starts):
        while at - starts[low] >= period_ms:
            low += 1
        most = max(most, high - low + 1)
    return most


def worker_run(tmp_path, server: RedisServer, children: int, workers: int) -> GreenqRun:
    run = GreenqRun(tmp_path, server.url, NAMESPACE, "-c", str(children), "-w", str(workers),
                    "--flush-stale-timeout", "0.2", task_file=TIME_TASKS)
    run.wait_ready(children)
    return run


def assert_nothing_waits(client, queue: GreenQueue) -> None:
    k = queue.keys
    assert client.zcard(k.delayed) == 0
    assert client.llen(k.pending) == 0
    assert client.llen(k.failed) == 0


@pytest.fixture
def servers():
    made = []

    def make(**kwargs) -> RedisServer:
        server = RedisServer(**kwargs).start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def runs():
    made = []

    def keep(run: GreenqRun) -> GreenqRun:
        made.append(run)
        return run

    yield keep
    for run in made:
        run.kill_all()


# -- a promoting process killed mid-script ---------------------------------------------


def blocked_fetch_connection(client) -> int | None:
    """The id of the one connection blocked in BLMOVE (the child's fetcher)."""
    blocked = [int(info["id"]) for info in client.client_list()
               if info["cmd"] == "blmove" and "b" in info["flags"]]
    assert len(blocked) <= 1, blocked
    return blocked[0] if blocked else None


def stop_in_a_fresh_wait(client, pending: str, child: int) -> int:
    """SIGSTOP `child` just after it began a BLMOVE (which lasts 1 s), its
    pipelined fetch.lua waiting in Redis behind it; returns that
    connection's id. An empty id in pending (what wake.lua pushes) ends the
    child's current wait; the one it blocks in next is fresh."""
    client.lpush(pending, "")
    for _ in range(500):
        os.kill(child, signal.SIGSTOP)
        fetch_connection = blocked_fetch_connection(client)
        if fetch_connection is not None:
            return fetch_connection
        os.kill(child, signal.SIGCONT)  # not blocked again yet
        time.sleep(0.001)
    pytest.fail("the worker child was never caught blocked in its BLMOVE")


def test_a_worker_killed_after_its_fetch_promoted_and_leased_delayed_jobs_loses_none(
        servers, runs, tmp_path):
    """A Lua script cannot be cut in half: a SIGKILL of the process that
    sent it either comes before the script runs (nothing happened) or after
    (it ran in full and its reply is lost). The second is the dangerous one,
    and this test makes it happen for sure. 300 jobs of 10 resources are
    due at one time T. 0.8 s before T the worker child is SIGSTOPped in a
    fresh BLMOVE (1 s long), its pipelined fetch.lua waiting in Redis right
    behind it. After T, CLIENT UNBLOCK ends the BLMOVE, so Redis runs that
    fetch for the stopped process: it promotes due jobs into their
    resources' order and leases the first of each resource to a process
    that will never read the reply. Then SIGKILL. The master takes the dead
    child's leases back (a crash counts as an attempt, so each job has one
    retry) and starts a new child: every job runs exactly once, each
    resource in order.

    The first job is submitted alone (its wake-up goes to the running
    child); the other 299, due at the same ms, wake nobody (submit.lua
    wakes a worker only for a job due before every other), so nothing but
    our CLIENT UNBLOCK ends the stopped child's wait before T."""
    server = servers()
    client = server.client()
    witness = Witness(server)
    queue = submitter(server)
    run = runs(worker_run(tmp_path, server, 1, 50))
    [child] = run.children()
    keys = queue.keys

    def job(n: int) -> dict:
        return {"task_id": "time.log", "job_id": f"j{n:04d}", "resource_id": f"r{n % 10}",
                "run_at": due / 1000, "retries": 1, "params": witness.params(n, seconds=0.01)}

    due = redis_ms(client) + 1500
    ids = queue.submit_jobs([job(0)])
    wait_until(lambda: redis_ms(client) >= due - 800, timeout=5)
    fetch_connection = stop_in_a_fresh_wait(client, keys.pending, child)
    try:
        ids += queue.submit_jobs([job(n) for n in range(1, 300)])
        assert client.zcard(keys.delayed) == 300
        wait_until(lambda: redis_ms(client) > due + 20, timeout=5)
        # 1: it was still blocked; 0: it timed out on its own, which leaves
        # the test valid only when its fetch ran after T (checked below).
        client.client_unblock(fetch_connection)
        owned = wait_until(lambda: [job_id for job_id in ids
                                    if f":{child}:" in (client.hget(keys.job(job_id), "owner")
                                                        or b"").decode()], timeout=10)
        # The first job of each resource is leased to the stopped child; the
        # rest of the promoted ones wait behind them in their resources' order.
        assert sorted(owned) == [f"j{n:04d}" for n in range(10)]
        assert witness.entries() == []  # a stopped process ran nothing
    finally:
        os.kill(child, signal.SIGKILL)  # kills a stopped process too (and the master reaps it)
    wait_until(lambda: not alive(child), timeout=10)

    wait_until(lambda: sum(witness.ended().values()) >= 300, timeout=90, interval=0.1)
    witness.assert_each_ran_once(range(300))
    assert child not in {e.pid for e in witness.entries()}
    witness.assert_in_order_one_at_a_time(
        {f"r{r}": list(range(r, 300, 10)) for r in range(10)})
    assert all(started >= due for started in started_ms(client, queue, ids))
    attempts = [int(client.hget(keys.job(job_id), "attempts")) for job_id in ids]
    assert attempts == [2] * 10 + [1] * 290  # the lost leases counted, as crashes do
    wait_until(lambda: client.hget(keys.counts, "active") in (None, b"0"), timeout=10)
    assert_nothing_waits(client, queue)
    assert "Traceback" not in run.output()


# -- Redis restarted with the AOF while jobs wait --------------------------------------


def test_redis_restarted_with_aof_while_jobs_wait_runs_each_once_on_time_or_at_once(
        servers, runs, tmp_path):
    """Redis (appendonly yes, appendfsync always) is SIGKILLed while 40
    delayed jobs wait: 20 come due while it is down, 20 some seconds after
    it is back. Every job runs once; the overdue ones as soon as the workers
    reconnect, the others at their time (bounds generous: they catch a job
    left behind, not a slow machine)."""
    server = servers(persistence=True)
    client = server.client()
    witness = Witness(server)
    queue = submitter(server)
    runs(worker_run(tmp_path, server, 1, 20))
    now = redis_ms(client)
    soon, later = now + 800, now + 6000
    ids = queue.submit_jobs(
        [{"task_id": "time.log", "run_at": soon / 1000, "params": witness.params(n)}
         for n in range(20)]
        + [{"task_id": "time.log", "run_at": later / 1000, "params": witness.params(n)}
           for n in range(20, 40)])
    assert client.zcard(queue.keys.delayed) == 40

    server.kill()            # every acknowledged write is in the AOF already
    time.sleep(1.5)          # the first 20 come due while Redis is down
    server.start()
    client = server.client()
    witness.client = client
    back = redis_ms(client)
    assert back > soon
    assert client.zcard(queue.keys.delayed) == 40  # the AOF kept them, all still waiting

    wait_until(lambda: sum(witness.ended().values()) >= 40, timeout=60, interval=0.1)
    witness.assert_each_ran_once(range(40))
    starts = started_ms(client, queue, ids)
    assert all(back <= start < back + 10_000 for start in starts[:20]), (back, starts[:20])
    assert all(later <= start < later + 5_000 for start in starts[20:]), (later, starts[20:])
    assert_nothing_waits(client, queue)


# -- Redis' clock jumping forward -------------------------------------------------------


def test_redis_clock_jumping_forward_runs_every_overdue_job_once(servers, runs, tmp_path):
    """DEBUG SLEEP 3 stalls Redis for 3 s, as a paused VM or a long fork
    would: its clock jumps forward between two scripts, and 50 delayed jobs
    due during the stall are all overdue at once when it ends. Every one
    runs, once, none before its due time."""
    server = servers(extra_args=("--enable-debug-command", "yes"))
    client = server.client()
    witness = Witness(server)
    queue = submitter(server)
    runs(worker_run(tmp_path, server, 1, 20))
    now = redis_ms(client)
    due = [now + 500 + 40 * n for n in range(50)]  # all within the stall
    ids = queue.submit_jobs([{"task_id": "time.log", "run_at": at / 1000,
                              "params": witness.params(n)} for n, at in enumerate(due)])
    client.execute_command("DEBUG", "SLEEP", "3")
    woke = redis_ms(client)
    assert woke - now >= 3000 and woke > due[-1]

    wait_until(lambda: sum(witness.ended().values()) >= 50, timeout=30, interval=0.1)
    witness.assert_each_ran_once(range(50))
    starts = started_ms(client, queue, ids)
    assert all(at <= start for at, start in zip(due, starts))
    assert all(start < woke + 10_000 for start in starts), (woke, starts)
    assert_nothing_waits(client, queue)


# -- a rate limit across processes ------------------------------------------------------


def test_a_rate_limit_holds_across_worker_processes_and_costs_no_attempt(
        servers, runs, tmp_path):
    """time.limited allows 10 starts a second. 60 jobs submitted at once to
    two worker children (20 greenlets each): by the start time fetch.lua
    stamps (Redis' clock), never more than 10 in any one-second window, all
    succeed with one attempt (waiting over the limit is no attempt and no
    error), and both children ran some."""
    server = servers()
    client = server.client()
    witness = Witness(server)
    queue = submitter(server)
    run = runs(worker_run(tmp_path, server, 2, 20))
    ids = queue.submit_jobs([{"task_id": "time.limited", "params": witness.params(n, seconds=0.05),
                              "retries": 3} for n in range(60)])

    wait_until(lambda: sum(witness.ended().values()) >= 60, timeout=60, interval=0.1)
    witness.assert_each_ran_once(range(60))
    starts = started_ms(client, queue, ids)
    assert most_in_window(starts, 1000) <= 10, sorted(starts)
    records = [client.hgetall(queue.keys.job(job_id)) for job_id in ids]
    assert {record[b"state"] for record in records} == {b"succeeded"}
    assert {record[b"attempts"] for record in records} == {b"1"}
    assert not any(b"error" in record for record in records)
    assert len({e.pid for e in witness.entries()}) == 2, "both children should run jobs"
    assert_nothing_waits(client, queue)
    assert "Traceback" not in run.output()


# -- a delayed job in its resource's order ------------------------------------------------


def test_a_delayed_job_takes_its_place_in_its_resource_order_when_due(servers, runs, tmp_path):
    """Job 0 of resource R is submitted first, due in 1 s; jobs 1-5 of R,
    submitted after it but runnable at once, take 0.3 s each. Job 0 joins
    R's order when due, behind job 5 (queued before then); jobs 6 and 7,
    submitted once job 0 was promoted, run after it. Two worker children:
    by Redis' clock, R's runs never overlap and come in that order."""
    server = servers()
    client = server.client()
    witness = Witness(server)
    queue = submitter(server)
    runs(worker_run(tmp_path, server, 2, 10))
    due = redis_ms(client) + 1000
    [delayed] = queue.submit_jobs([{"task_id": "time.log", "resource_id": "R",
                                    "run_at": due / 1000, "params": witness.params(0, seconds=0.1)}])
    assert client.hget(queue.keys.job(delayed), "state") == b"scheduled"
    queue.submit_jobs([{"task_id": "time.log", "resource_id": "R",
                        "params": witness.params(n, seconds=0.3)} for n in range(1, 6)])
    wait_until(lambda: client.hget(queue.keys.job(delayed), "state") != b"scheduled", timeout=10)
    queue.submit_jobs([{"task_id": "time.log", "resource_id": "R",
                        "params": witness.params(n, seconds=0.1)} for n in (6, 7)])

    wait_until(lambda: sum(witness.ended().values()) >= 8, timeout=30, interval=0.1)
    witness.assert_each_ran_once(range(8))
    witness.assert_in_order_one_at_a_time({"R": [1, 2, 3, 4, 5, 0, 6, 7]})
    assert witness.spans()[0][0] >= due * 1000
    assert_nothing_waits(client, queue)
