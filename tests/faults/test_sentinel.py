"""Redis Sentinel: redis+sentinel:// URLs, workers following the master
through SENTINEL FAILOVER and through a killed master, and a master demoted
by REPLICAOF (no Sentinel) as an outage, never a failed job.

One Sentinel set (1 master, 1 replica, 3 sentinels; tests/sentinel_set.py)
serves the module. Three kinds of worker run on it at once: a queue in
this process, a monkey-patched worker program that writes its events
(sidelog.EventWorker) and `greenq run -c 2`. The witness is the side-effect
log of tests/tasks/fault_log_sleep.py ("fault.log.patient": 30 s timeout,
so no lease lapses during an outage and every run beyond one would be a
bug)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import gevent
import pytest
import redis

import greenq
from conftest import wait_until
from greenq import GreenQueue, config
from redis_server import RedisServer
from sentinel_set import SentinelSet
from sidelog import TASK_FILE, EventWorker, GreenqRun, SideLog

pytestmark = pytest.mark.timeout(150)

NAMESPACE = "sentinel"
TASK_ID = "fault.log.patient"
BACK_WITHIN = 30.0  # generous: catches a hang, not a slow recovery
PASSWORD = "pw-do-not-print"


# -- URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize("url, where", [
    ("redis+sentinel://127.0.0.1:26379/mymaster", "sentinel 127.0.0.1:26379/mymaster/0"),
    ("redis+sentinel://a:1,b:2,c:3/svc/4", "sentinel a:1,b:2,c:3/svc/4"),
    ("redis+sentinel://:secret@a:1,b:2/svc", "sentinel a:1,b:2/svc/0"),
    ("redis+sentinel://user:secret@a:1/svc/2?sentinel_password=other",
     "sentinel a:1/svc/2"),
    ("redis+sentinel://[::1]:5000/svc", "sentinel [::1]:5000/svc/0"),
    ("redis+sentinel://host/svc", "sentinel host:26379/svc/0"),
])
def test_a_sentinel_url_names_its_sentinels_service_and_db_without_the_password(url, where):
    kwargs = config.connection_kwargs(url, None)
    assert config.describe(kwargs) == where
    assert "secret" not in config.describe(kwargs) and "other" not in repr(kwargs)


def test_the_url_password_is_for_the_master_and_sentinel_password_for_the_sentinels():
    kwargs = config.connection_kwargs(
        "redis+sentinel://user:p%40ss@a:1/svc?sentinel_password=s3", None)
    assert (kwargs["username"], kwargs["password"]) == ("user", "p@ss")
    assert kwargs["master_locator"]._sentinel().sentinel_kwargs["password"] == "s3"
    plain = config.connection_kwargs("redis+sentinel://:pw@a:1/svc", None)
    assert plain["password"] == "pw"
    assert plain["master_locator"]._sentinel().sentinel_kwargs["password"] is None


@pytest.mark.parametrize("url, complaint", [
    ("redis+sentinel://a:1", "no service name"),
    ("redis+sentinel://a:1/", "no service name"),
    ("redis+sentinel:///svc", "no sentinel address"),
    (f"redis+sentinel://:{PASSWORD}@/svc", "no sentinel address"),
    ("redis+sentinel://a:0/svc", "bad sentinel port '0'"),
    ("redis+sentinel://a:65536/svc", "bad sentinel port '65536'"),
    (f"redis+sentinel://:{PASSWORD}@a:x/svc", "bad sentinel port 'x'"),
    (f"redis+sentinel://:{PASSWORD}@a:1,,b:2/svc", "empty sentinel host"),
    ("redis+sentinel://a:1/svc/x", "bad db 'x'"),
    ("redis+sentinel://a:1/svc/0/extra", "too many path parts"),
    (f"redis+sentinel://:{PASSWORD}@a:1/svc?timeout=1", "unknown option 'timeout'"),
])
def test_a_bad_sentinel_url_raises_a_clear_value_error_without_the_password(url, complaint):
    with pytest.raises(ValueError, match=complaint) as caught:
        GreenQueue(redis_url=url)
    assert PASSWORD not in str(caught.value)


@pytest.fixture(scope="module")
def sentinel_set():
    sentinels = SentinelSet()
    yield sentinels
    sentinels.close()


def test_env_and_cli_take_a_sentinel_url_and_never_print_its_password(sentinel_set):
    """The data nodes get an ACL user with a password (the default user
    stays open, so replication and the sentinels are untouched)."""
    for node in sentinel_set.nodes:
        with node.client() as client:
            client.acl_setuser("app", enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"],
                               channels=["*"], commands=["+@all"])
    namespace = NAMESPACE + "-cli"
    url = sentinel_set.url.replace("://", f"://app:{PASSWORD}@", 1)
    try:
        queue = GreenQueue(redis_url=url, namespace=namespace)
        job_id = queue.submit_job("some.task")
        assert PASSWORD not in repr(queue) and "sentinel 127.0.0.1:" in repr(queue)
        queue.shutdown()
        stats = [sys.executable, "-m", "greenq", "stats", "--json", "--namespace", namespace]
        from_env = subprocess.run(stats, env={**os.environ, "GREENQ_REDIS_URL": url},
                                  capture_output=True, text=True, timeout=60)
        assert from_env.returncode == 0, from_env.stderr
        assert json.loads(from_env.stdout)["pending"] == 1
        shown = subprocess.run([sys.executable, "-m", "greenq", "job", job_id, "--json",
                                "--redis-url", url, "--namespace", namespace],
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["state"] == "pending"
        # A wrong password: refused, said so, the password never printed.
        wrong_url = url.replace(PASSWORD, "not-" + PASSWORD)
        wrong = subprocess.run([*stats, "--redis-url", wrong_url], capture_output=True,
                               text=True, timeout=60)
        assert wrong.returncode != 0
        assert "authentication failed at sentinel 127.0.0.1:" in wrong.stderr, wrong.stderr
        assert PASSWORD not in wrong.stderr + from_env.stderr + shown.stderr
    finally:
        for node in sentinel_set.nodes:
            with node.client() as client:
                client.acl_deluser("app")


# -- failover ---------------------------------------------------------------------------


class Crew:
    """The three kinds of worker of the module, all on the Sentinel URL, and
    a submitter in this process that keeps asking until Redis acknowledges
    (the same job id each time: an idempotent submit)."""

    def __init__(self, url: str, tmp_path) -> None:
        self.side = SideLog(tmp_path / "side.log")
        self.queue = GreenQueue(redis_url=url, namespace=NAMESPACE, worker_count=4,
                                flush_stale_timeout=0.5)
        self.queue.register_task(TASK_FILE)
        self.events: list[tuple[str, object]] = []
        for name in ("job_success", "job_fail", "job_retry", "error"):
            self.queue.on(name, lambda payload, name=name: self.events.append((name, payload)))
        self.queue.start()
        self.event_worker = EventWorker(tmp_path, url, NAMESPACE, workers=4,
                                        flush_stale_timeout=0.5)
        self.run = GreenqRun(tmp_path, url, NAMESPACE, "-c", "2", "-w", "4",
                             "--flush-stale-timeout", "0.5")
        self.children = self.run.wait_ready(2)
        wait_until(lambda: self.event_worker.events("started"), timeout=30)
        self.resource_of: dict[int, str] = {}
        self.acknowledged: list[int] = []
        self.next_n = 0

    def pids(self) -> set[int]:
        return {os.getpid(), self.event_worker.pid, *self.children}

    def submit(self, count: int, seconds: float = 0.05) -> None:
        """Submit `count` jobs, each retried until Redis takes it."""
        for _ in range(count):
            n = self.next_n
            self.next_n += 1
            self.resource_of[n] = f"r{n % 7}"
            while True:
                try:
                    self.queue.submit_job(TASK_ID, resource_id=self.resource_of[n], job_id=f"j{n}",
                                          params=self.side.params(n, seconds=seconds))
                    break
                except (redis.ConnectionError, redis.TimeoutError, greenq.BrokerError):
                    gevent.sleep(0.05)
            self.acknowledged.append(n)

    def errors_here(self, since: int) -> list:
        return [payload for name, payload in self.events[since:] if name == "error"]

    def wait_everyone_back(self, mark: int, started: float) -> float:
        """Submit until every worker process ran a job after log line `mark`;
        returns the seconds from `started` to the first job ended after it."""
        def back() -> bool:
            later = self.side.entries()[mark:]
            if {e.pid for e in later if e.what == "end"} >= self.pids():
                return True
            self.submit(8)
            return False
        wait_until(back, timeout=BACK_WITHIN, interval=0.2)
        return time.monotonic() - started

    def assert_clean(self) -> None:
        wait_until(lambda: set(self.acknowledged) <= set(self.side.count("end")),
                   timeout=BACK_WITHIN)
        self.side.assert_one_at_a_time(self.resource_of)
        assert not [n for name, n in self.events if name in ("job_fail", "job_retry")]
        assert not [e for e in self.event_worker.events()
                    if e["event"] in ("job_fail", "job_retry")]
        output = self.run.output()
        assert "job_fail" not in output and "Traceback" not in output
        # Another server after a failover is no restart that lost the jobs.
        assert "Redis restarted during the outage" not in output

    def close(self) -> None:
        self.queue.shutdown(timeout=5)
        self.event_worker.kill()
        self.run.kill_all()


@pytest.fixture(scope="module")
def crew(sentinel_set, tmp_path_factory):
    workers = Crew(sentinel_set.url, tmp_path_factory.mktemp("crew"))
    yield workers
    workers.close()


def _outage_lines(output: str) -> int:
    return output.count("Redis unreachable, retrying with back-off")


def test_through_sentinel_failover_each_acknowledged_job_runs_once_with_one_outage_per_worker(
        sentinel_set, crew):
    """With min-replicas-to-write 1 the old master refuses writes the moment
    its replica is promoted, so nothing acknowledged is lost (without it,
    it takes writes some seconds longer, which the failover then drops)."""
    sentinel_set.set_min_replicas(1)
    crew.submit(30)
    wait_until(lambda: len(crew.side.count("end")) >= 10, timeout=30)
    mark, here, there = len(crew.side.entries()), len(crew.events), len(crew.event_worker.events())
    run_lines = _outage_lines(crew.run.output())
    old = sentinel_set.master_port()

    submitter = gevent.spawn(crew.submit, 60, 0.1)  # submits all through the failover
    sent_at = sentinel_set.start_failover()
    submitter.join(BACK_WITHIN)
    assert submitter.successful()
    assert sentinel_set.master_port() != old

    crew.wait_everyone_back(mark, sent_at)
    sentinel_set.settle(hasten=True)
    crew.assert_clean()
    crew.side.assert_each_ended_once(crew.acknowledged)
    assert crew.side.interrupted() == []
    # One outage, one `error` event, in each process.
    errors = crew.errors_here(here)
    assert len(errors) == 1 and isinstance(errors[0], greenq.BrokerError), errors
    theirs = [e for e in crew.event_worker.events()[there:] if e["event"] == "error"]
    assert len(theirs) == 1 and theirs[0]["type"] == "BrokerError", theirs
    # `greenq run`: each child logs its one event (its master, with no
    # handler of its own, adds none).
    assert _outage_lines(crew.run.output()) - run_lines == 2, crew.run.output()


def _greenq_clients(node: RedisServer, idle_under: int = 3) -> list[dict]:
    """Normal clients of `node` that sent a command within the last
    `idle_under` seconds (a fetcher's BLMOVE returns every second), other
    than sentinels and this call's own. An idle pooled connection is left
    alone: it asks the sentinels again when it is next checked out."""
    with node.client(decode_responses=True) as client:
        me = client.client_id()
        return [c for c in client.client_list(_type="normal")
                if int(c["id"]) != me and not c.get("name", "").startswith("sentinel-")
                and int(c["idle"]) < idle_under]


def test_workers_leave_a_master_sentinel_no_longer_names_before_it_is_demoted(sentinel_set, crew):
    """Redis' default (min-replicas-to-write 0): after SENTINEL FAILOVER the
    old master takes writes until Sentinel demotes it some 10 s later, and
    drops them then. Every greenq connection must move to the new master
    while the old one still says it is a master: no connection of theirs
    sends it anything for 3 s."""
    sentinel_set.set_min_replicas(0)
    old = sentinel_set.master()
    assert _greenq_clients(old), "the crew should be connected to the master"
    mark = len(crew.side.entries())
    sent_at = sentinel_set.start_failover()
    wait_until(lambda: not _greenq_clients(old), timeout=BACK_WITHIN, interval=0.1)
    with old.client() as client:
        assert client.execute_command("ROLE")[0] == b"master", \
            f"Sentinel demoted it first; clients: {_greenq_clients(old, 100)}"
    crew.wait_everyone_back(mark, sent_at)
    sentinel_set.settle(hasten=True)
    crew.assert_clean()


def test_after_the_master_is_killed_every_worker_is_back_and_new_jobs_run(sentinel_set, crew):
    """SIGKILL loses what the replica had not received yet (asynchronous
    replication), so this asserts the way back, not every old job."""
    sentinel_set.set_min_replicas(0)  # the lone replica left must take writes
    crew.submit(20)
    wait_until(lambda: set(crew.acknowledged) <= set(crew.side.count("end")), timeout=30)
    # Their finishes too are written (and, a moment later, replicated).
    wait_until(lambda: crew.queue.stats()["active"] == 0, timeout=30)
    gevent.sleep(0.2)
    mark, here, there = len(crew.side.entries()), len(crew.events), len(crew.event_worker.events())
    run_lines = _outage_lines(crew.run.output())
    first_new = crew.next_n

    killed_at = sentinel_set.kill_master()
    crew.wait_everyone_back(mark, killed_at)
    new = [n for n in crew.acknowledged if n >= first_new]
    wait_until(lambda: set(new) <= set(crew.side.count("end")), timeout=BACK_WITHIN)
    crew.side.assert_each_ended_once(crew.acknowledged)
    crew.assert_clean()
    assert len(crew.errors_here(here)) == 1, crew.errors_here(here)
    assert len([e for e in crew.event_worker.events()[there:] if e["event"] == "error"]) == 1
    assert _outage_lines(crew.run.output()) - run_lines == 2, crew.run.output()


# -- READONLY without Sentinel -----------------------------------------------------------


def _switch(old: RedisServer, new: RedisServer) -> None:
    """A manual failover that drops no write: pause writes on `old`, wait
    until `new` has them all, promote `new`, make `old` its replica."""
    with old.client() as o, new.client() as n:
        o.execute_command("CLIENT", "PAUSE", "5000", "WRITE")
        offset = o.info("replication")["master_repl_offset"]
        wait_until(lambda: n.info("replication").get("slave_repl_offset", -1) >= offset
                   or n.info("replication")["role"] == "master", timeout=10)
        n.replicaof("NO", "ONE")
        o.replicaof("127.0.0.1", new.port)
        o.execute_command("CLIENT", "UNPAUSE")


def test_a_master_demoted_by_replicaof_is_an_outage_not_a_failed_job_and_finishes_are_kept(
        tmp_path):
    first = RedisServer().start()
    second = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(first.port))).start()
    side = SideLog(tmp_path / "side.log")
    queue = GreenQueue(redis_url=first.url, namespace="readonly", worker_count=4,
                       flush_stale_timeout=0.5)
    queue.register_task(TASK_FILE)
    events: list[tuple[str, object]] = []
    for name in ("job_success", "job_fail", "job_retry", "error"):
        queue.on(name, lambda payload, name=name: events.append((name, payload)))
    try:
        queue.start()
        with second.client() as client:
            wait_until(lambda: client.info("replication")["master_link_status"] == "up", timeout=10)
        # Two running through the demotion (their finishes meet READONLY),
        # then quick ones.
        ids = [queue.submit_job(TASK_ID, resource_id="slow", params=side.params(0, seconds=2.0)),
               queue.submit_job(TASK_ID, resource_id="slow", params=side.params(1, seconds=0.05))]
        wait_until(lambda: side.count("start")[0] == 1, timeout=10)

        _switch(first, second)  # `first` is a replica now; the queue still talks to it
        with pytest.raises(redis.ConnectionError, match="READONLY"):
            queue.submit_job(TASK_ID, params=side.params(2))
        wait_until(lambda: side.count("end")[0] == 1, timeout=10)
        gevent.sleep(1.0)  # the finish is refused meanwhile, and the fetcher's calls too
        assert [name for name, _ in events] == ["error"], events
        assert "READONLY" in str(events[0][1]) or "UNBLOCKED" in str(events[0][1])

        _switch(second, first)  # promoted back
        ids.append(queue.submit_job(TASK_ID, resource_id="slow", params=side.params(3)))
        wait_until(lambda: {job.id for name, job in events if name == "job_success"} == set(ids),
                   timeout=BACK_WITHIN)
        side.assert_each_ended_once([0, 1, 3])
        assert [name for name, _ in events if name != "job_success"] == ["error"], events
        assert queue.get_job(ids[0]).state == "succeeded"
    finally:
        queue.shutdown(timeout=5)
        second.close()
        first.close()
