"""Security: TLS (rediss://) against a TLS-only redis-server, an ACL user
limited to one queue's keys (the exact line in docs/acl.md), and passwords
that never show in logs, CLI output, exceptions or reprs.

Each group has its own private redis-server; on the ACL server the
`default` user is off, so greenq can only be using the user it is given."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import uuid

import pytest
import redis

from queue_state import unfinished_records
from conftest import TASKS, wait_until
from greenq import GreenQueue
from redis_server import RedisServer, free_port
from tls import TlsRedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACL_DOC = os.path.join(ROOT, "docs", "acl.md")
SCRIPTS = os.path.join(ROOT, "greenq", "scripts")
GREENQ = [sys.executable, "-m", "greenq"]
OUTCOME = os.path.join(TASKS, "proc_outcome.py")   # proc.outcome: fails when params["fail"]
SLOW = os.path.join(TASKS, "fault_slow.py")        # fault.slow: sleeps params["seconds"]
SECRET = "SECRETPW"
# Commands docs/acl.md lists as optional: greenq must go on without them.
OPTIONAL_COMMANDS = {"config|get", "info"}
ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex


def greenq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GREENQ_REDIS_URL", "REDIS_URL")}
    return subprocess.run(GREENQ + list(args), capture_output=True, text=True, env=env,
                          timeout=timeout)


class Run:
    """A `greenq run` subprocess with its output in a file; killed by close()."""

    def __init__(self, tmp_path, args: list[str]) -> None:
        self.path = tmp_path / f"run-{time.monotonic_ns()}.log"
        self._file = open(self.path, "wb")
        env = {k: v for k, v in os.environ.items() if k not in ("GREENQ_REDIS_URL", "REDIS_URL")}
        self.process = subprocess.Popen(GREENQ + ["run", *args], stdout=self._file,
                                        stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)

    def log(self) -> str:
        return self.path.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"greenq run did not stop within {timeout}s:\n{self.log()}")

    def close(self) -> None:
        if self.process.poll() is None:
            # Its own session: the master and its children go together.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._file.close()


@pytest.fixture
def runs(tmp_path):
    started: list[Run] = []

    def start(*args: str) -> Run:
        run = Run(tmp_path, list(args))
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


@pytest.fixture
def queues():
    """queues(**GreenQueue kwargs) -> a queue shut down at teardown."""
    made: list[GreenQueue] = []

    def make(*tasks: str, **kwargs) -> GreenQueue:
        queue = GreenQueue(**kwargs)
        for spec in tasks:
            queue.register_task(spec)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        try:
            queue.shutdown(timeout=5)
        except Exception:  # a queue that never reached its Redis has nothing to stop
            pass


def exercise_queue(queue: GreenQueue, *, jobs: int = 6) -> None:
    """Submit, run in this process, count, fail, retry, delete, flush: the
    whole API once. Half the jobs fail (no retries) into the failed queue."""
    done, failed = [], []
    queue.on("job_success", done.append)
    queue.on("job_fail", failed.append)
    queue.start()
    ids = [queue.submit_job("proc.outcome", resource_id=f"res-{n % 2}", params={"fail": n % 2})
           for n in range(jobs)]
    ids += queue.submit_jobs([{"task_id": "proc.outcome", "params": {"n": n}} for n in range(jobs)])
    wait_until(lambda: len(done) == jobs + jobs // 2 and len(failed) == jobs // 2, timeout=30)
    assert {job.id for job in done + failed} == set(ids)
    stats = queue.stats()
    counts = (stats["pending"], stats["active"], stats["waiting"], stats["failed"])
    assert counts == (0, 0, 0, jobs // 2)
    assert sorted(job.id for job in queue.failed_jobs()) == sorted(job.id for job in failed)
    assert queue.retry_failed_jobs() == jobs // 2
    wait_until(lambda: len(failed) == jobs, timeout=30)  # they fail again
    assert queue.delete_failed_jobs() == jobs // 2
    assert queue.force_flush_stale_jobs() == 0
    assert queue.stats()["failed"] == 0
    queue.shutdown(timeout=10)


# -- TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server():
    server = TlsRedisServer().start()
    yield server
    server.close()


def test_the_tls_server_accepts_only_tls(tls_server):
    # What the other TLS tests stand on: no plain-text port is open.
    assert tls_server.client().config_get("port") == {"port": "0"}
    plain = redis.Redis(host="127.0.0.1", port=tls_server.port, socket_timeout=5,
                        socket_connect_timeout=5)
    with pytest.raises(redis.ConnectionError):
        plain.ping()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["url", "redis_config"])
def test_a_queue_over_tls_runs_jobs_counts_them_and_handles_the_failed_queue(
        tls_server, queues, namespace, how):
    if how == "url":
        queue = queues(OUTCOME, redis_url=tls_server.url(), namespace=namespace, worker_count=4)
    else:
        queue = queues(OUTCOME, namespace=namespace, worker_count=4, redis_config={
            "host": "127.0.0.1", "port": tls_server.port, "ssl": True,
            "ssl_ca_certs": tls_server.certs.ca})

    exercise_queue(queue)

    prefix = f"{namespace}:{{default}}:".encode()
    client = tls_server.client()
    # every job record is gone, or kept for result_ttl as the job's end
    assert unfinished_records(client, prefix.decode()) == []


@pytest.mark.timeout(180)
def test_greenq_run_with_children_and_the_cli_work_over_tls(tls_server, runs, namespace):
    common = ["--redis-url", tls_server.url(), "--namespace", namespace]
    run = runs(OUTCOME, "-c", "2", "-w", "4", *common)

    ids = []
    for n in range(6):
        result = greenq("submit", "proc.outcome", "--params", json.dumps({"fail": n % 2}), *common)
        assert result.returncode == 0, result.stderr
        ids.append(result.stdout.strip())

    def counts():
        result = greenq("stats", "--json", *common)
        assert result.returncode == 0, result.stderr
        numbers = json.loads(result.stdout)
        settled = numbers["failed"] == 3 and numbers["pending"] == numbers["active"] == 0
        return numbers if settled else None

    wait_until(counts, timeout=60, interval=0.5)
    listed = greenq("failed", "list", "--json", *common)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 3
    assert {json.loads(line)["id"] for line in listed.stdout.splitlines()} < set(ids)
    assert greenq("failed", "delete", "--yes", *common).stdout.strip() == "3 jobs deleted"
    assert run.stop() == 0, run.log()
    assert crash_tracebacks(run.log()) == 0, run.log()


@pytest.mark.timeout(120)
def test_a_wrong_ca_fails_fast_with_a_certificate_error_not_a_hang(
        tls_server, queues, namespace, runs):
    url = tls_server.url(ca=tls_server.certs.wrong_ca)
    queue = queues(OUTCOME, redis_url=url, namespace=namespace)

    for call in (lambda: queue.submit_job("proc.outcome"), queue.stats, queue.start):
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            call()
        assert time.monotonic() - started < 30  # a bound that catches a hang, not a timing claim

    result = greenq("stats", "--redis-url", url, "--namespace", namespace)
    assert result.returncode == 1
    assert re.fullmatch(
        r"greenq: cannot reach Redis at 127\.0\.0\.1:\d+/0: .*certificate verify failed.*\n",
                        result.stderr), result.stderr

    run = runs(OUTCOME, "-c", "1", "--redis-url", url, "--namespace", namespace)
    try:
        status = run.process.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"greenq run with a wrong CA did not exit:\n{run.log()}")
    assert status == 1
    assert "certificate verify failed" in run.log()


def test_a_plain_url_against_the_tls_port_fails_fast(tls_server, namespace):
    result = greenq("stats", "--redis-url", f"redis://127.0.0.1:{tls_server.port}/0",
                    "--namespace", namespace, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("greenq: cannot reach Redis at 127.0.0.1:")
    assert "Traceback" not in result.stderr


def crash_tracebacks(log: str) -> int:
    """Tracebacks in a `greenq run` log besides those of failed jobs (each
    logged once by greenq.jobs as it goes to the failed queue)."""
    return log.count("Traceback") - log.count("moved to the failed queue:")


# -- ACL --------------------------------------------------------------------------


def documented_acl_words() -> list[str]:
    """The words after `ACL SETUSER` in docs/acl.md's one-line user."""
    with open(ACL_DOC) as doc:
        lines = [line for line in doc.read().splitlines() if line.startswith("ACL SETUSER greenq ")]
    assert len(lines) == 1, "docs/acl.md has exactly one `ACL SETUSER greenq ...` line"
    return lines[0].split()[3:]  # after ACL SETUSER <name>


def documented_commands() -> set[str]:
    return {word[1:] for word in documented_acl_words() if word.startswith("+")}


class AclServer:
    """A private redis-server whose `default` user is off; `admin` (all
    rights) sets up users and checks state."""

    def __init__(self) -> None:
        self.server = RedisServer().start()
        self.port = self.server.port
        bootstrap = self.server.client()
        bootstrap.execute_command("ACL", "SETUSER", "admin", "on", ">" + ADMIN_PASSWORD,
                                  "~*", "&*", "+@all")
        bootstrap.execute_command("ACL", "SETUSER", "default", "off")
        bootstrap.close()
        self.admin = redis.Redis(host="127.0.0.1", port=self.port, username="admin",
                                 password=ADMIN_PASSWORD)

    def add_user(self, namespace: str, password: str, extra: tuple[str, ...] = (),
                 queue_id: str = "default") -> str:
        """A user made from docs/acl.md's line for `namespace`/`queue_id`."""
        name = "gq-" + uuid.uuid4().hex[:8]
        words = []
        for word in documented_acl_words():
            if word.startswith(">"):
                word = ">" + password
            elif word.startswith("~"):
                assert word == "~greenq:{default}:*", word
                word = f"~{namespace}:{{{queue_id}}}:*"
            elif word.startswith("&"):
                assert word == "&greenq:{default}:ended", word
                word = f"&{namespace}:{{{queue_id}}}:ended"
            words.append(word)
        self.admin.execute_command("ACL", "SETUSER", name, *words, *extra)
        return name

    def url(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"

    def denials(self, user: str) -> list[str]:
        """What Redis refused this user (ACL LOG), as command or key names."""
        return sorted({entry["object"] for entry in self.admin.acl_log(count=1000)
                       if entry["username"] == user})

    def close(self) -> None:
        self.admin.close()
        self.server.close()


@pytest.fixture(scope="module")
def acl():
    server = AclServer()
    yield server
    server.close()


def test_the_default_user_is_off_on_the_acl_server(acl):
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=acl.port).ping()


def test_every_command_the_lua_scripts_call_is_in_the_documented_acl():
    called = set()
    for folder, _, files in os.walk(SCRIPTS):
        for name in files:
            if name.endswith(".lua"):
                with open(os.path.join(folder, name)) as source:
                    called |= {c.lower() for c in re.findall(
                        r'(?:rcall|redis\.p?call)\(\s*["\']([A-Za-z]+)["\']', source.read())}
    assert called  # the pattern still finds the calls
    missing = called - documented_commands()
    assert not missing, f"missing from docs/acl.md: {missing}"


@pytest.mark.timeout(120)
def test_an_acl_user_limited_to_the_queue_keys_runs_the_whole_api(acl, queues, namespace):
    password = uuid.uuid4().hex
    user = acl.add_user(namespace, password)
    queue = queues(OUTCOME, redis_url=acl.url(user, password), namespace=namespace, worker_count=4)

    exercise_queue(queue)

    # Only optional checks (maxmemory-policy, the server's version) were
    # refused, and start() went on.
    assert set(acl.denials(user)) <= OPTIONAL_COMMANDS
    # greenq wrote no key outside the queue's prefix (the ACL would have refused it).
    assert all(k.startswith(f"{namespace}:{{default}}:".encode())
               for k in acl.admin.keys(f"{namespace}*"))


@pytest.mark.timeout(120)
def test_an_acl_user_with_the_documented_rights_serves_the_dashboard_and_metrics(
        acl, queues, namespace):
    from werkzeug.test import Client

    from greenq import browse
    from greenq.web import make_app

    password = uuid.uuid4().hex
    user = acl.add_user(namespace, password)
    queue = queues(OUTCOME, redis_url=acl.url(user, password), namespace=namespace, worker_count=4)
    queue.start()
    ids = [queue.submit_job("proc.outcome", resource_id="r", params={"fail": n % 2}, retries=0)
           for n in range(4)]
    wait_until(lambda: queue.stats()["failed"] == 2 and not queue.stats()["active"]
               and not queue.stats()["waiting"], timeout=30)
    queue.submit_jobs([{"task_id": "proc.outcome", "delay": 600}] * 3)
    client = Client(make_app(queue))
    for path in ("/", "/running", "/locked", "/waiting?resource=r", "/pending", "/scheduled",
                 "/schedules", "/processes", "/failed", "/failed?task=proc.outcome",
                 f"/jobs/{ids[0]}", "/metrics", "/api/stats"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True)[:500])
    assert 'outcome="failed"' in client.get("/metrics").get_data(as_text=True)
    assert browse.count_matching(queue, "failed", "proc.outcome") == 2
    assert browse.cancel_all(queue, "scheduled") == 3
    assert browse.retry_all_failed(queue, "proc.outcome") == 2
    assert set(acl.denials(user)) <= OPTIONAL_COMMANDS


@pytest.mark.timeout(120)
def test_an_acl_user_with_the_documented_rights_waits_on_jobs(acl, queues, namespace,
                                                             monkeypatch):
    """wait(): watch.lua, the pub/sub listener (SUBSCRIBE to the queue's
    `ended` channel, its PING and sweep, shortened here so they run) and
    the PUBLISH of the ending script, all as the documented user."""
    import gevent

    from greenq import JobNotFoundError, waiting

    monkeypatch.setattr(waiting, "SWEEP_INTERVAL", 0.2)
    password = uuid.uuid4().hex
    user = acl.add_user(namespace, password)
    queue = queues(OUTCOME, redis_url=acl.url(user, password), namespace=namespace, worker_count=4)
    ids = [queue.submit_job("proc.outcome", params={"fail": n % 2}) for n in range(4)]
    waiters = [gevent.spawn(queue.wait, job_id, 30) for job_id in ids]
    wait_until(lambda: all(acl.admin.hget(queue.keys.job(job_id), "watch") for job_id in ids))
    gevent.sleep(0.5)  # a sweep or two, and their PINGs
    queue.start()
    gevent.joinall(waiters, timeout=15)
    assert [w.value.state if w.value else w.exception for w in waiters] == \
        ["succeeded", "failed"] * 2
    with pytest.raises(JobNotFoundError):
        queue.wait("no-such-job", timeout=5)
    assert set(acl.denials(user)) <= OPTIONAL_COMMANDS


@pytest.mark.timeout(180)
def test_an_acl_user_runs_child_workers_and_every_cli_command(acl, runs, namespace):
    password = uuid.uuid4().hex
    user = acl.add_user(namespace, password)
    common = ["--redis-url", acl.url(user, password), "--namespace", namespace]
    run = runs(OUTCOME, SLOW, "-c", "2", "-w", "4", "--flush-stale-timeout", "1", *common)

    def cli(*args: str) -> str:
        result = greenq(*args, *common)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout

    slow_id = cli("submit", "fault.slow", "--resource", "slow",
                  "--params", '{"n": 1, "seconds": 30}').strip()
    cli("submit", "fault.slow", "--resource", "slow", "--params", '{"n": 2, "seconds": 0}')
    for n in range(4):
        cli("submit", "proc.outcome", "--params", json.dumps({"fail": n % 2}))

    def inspected():
        report = json.loads(cli("inspect", "--json"))
        return report if report["running"] and report["locked"] else None

    report = wait_until(inspected, timeout=60, interval=0.5)
    assert report["running"][0]["id"] == slow_id
    assert report["locked"] == [{"resource": "slow", "holder": slow_id, "waiting": 1}]
    wait_until(lambda: json.loads(cli("stats", "--json"))["failed"] == 2, timeout=60, interval=0.5)
    assert len(cli("failed", "list").splitlines()) == 2
    assert cli("failed", "retry").strip() == "2 jobs retried"
    wait_until(lambda: json.loads(cli("stats", "--json"))["failed"] == 2, timeout=60, interval=0.5)
    assert cli("failed", "delete", "--yes").strip() == "2 jobs deleted"
    assert cli("flush-stale").strip() == "0 stale jobs flushed"
    cli("stats")

    # A second TERM gives the slow job back instead of waiting 30 s for it.
    run.process.send_signal(signal.SIGTERM)
    wait_until(lambda: "graceful shutdown" in run.log(), timeout=30)
    assert run.stop() == 0, run.log()
    assert crash_tracebacks(run.log()) == 0, run.log()
    assert set(acl.denials(user)) <= OPTIONAL_COMMANDS


def test_the_acl_user_is_refused_on_another_namespace(acl, queues, namespace):
    password = uuid.uuid4().hex
    user = acl.add_user(namespace, password)
    other = queues(OUTCOME, redis_url=acl.url(user, password), namespace=namespace + "x")

    with pytest.raises(redis.exceptions.NoPermissionError):
        other.submit_job("proc.outcome")
    with pytest.raises(redis.exceptions.NoPermissionError):
        other.stats()
    with pytest.raises(redis.exceptions.NoPermissionError):
        other.retry_failed_jobs()

    result = greenq("stats", "--redis-url", acl.url(user, password), "--namespace", namespace + "x")
    assert result.returncode == 1
    assert result.stderr.startswith("greenq: Redis refused: ") and "permission" in result.stderr
    assert acl.admin.keys(f"{namespace}x*") == []


@pytest.mark.timeout(60)
def test_starting_workers_on_a_namespace_the_user_may_not_touch_fails_at_start(
        acl, queues, namespace):
    # Today start() returns, and the fetch and commit greenlets die of
    # NOPERM with nothing but gevent's stderr print: a worker that never
    # runs a job and never says why.
    password = uuid.uuid4().hex
    user = acl.add_user(namespace, password)
    other = queues(OUTCOME, redis_url=acl.url(user, password), namespace=namespace + "x")

    with pytest.raises(redis.exceptions.NoPermissionError):
        other.start()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("children", ["0", "1"])
def test_greenq_run_on_a_namespace_the_user_may_not_touch_exits_with_the_reason(
        acl, runs, namespace, children):
    password = uuid.uuid4().hex
    user = acl.add_user(namespace, password)
    run = runs(OUTCOME, "-c", children, "--redis-url", acl.url(user, password),
               "--namespace", namespace + "x")

    try:
        status = run.process.wait(60)  # boot failures with back-off take ~30 s with -c 1
    except subprocess.TimeoutExpired:
        pytest.fail(f"greenq run kept running without the rights to its queue:\n{run.log()}")
    assert status != 0
    assert "permission" in run.log()


@pytest.mark.timeout(60)
def test_workers_whose_rights_are_revoked_report_an_error_event(acl, queues, namespace):
    password = uuid.uuid4().hex
    user = acl.add_user(namespace, password)
    queue = queues(OUTCOME, redis_url=acl.url(user, password), namespace=namespace, worker_count=2)
    errors = []
    queue.on("error", errors.append)
    queue.start()
    queue.submit_job("proc.outcome")
    wait_until(lambda: queue.stats()["pending"] == 0, timeout=20)

    acl.admin.execute_command("ACL", "SETUSER", user, "resetkeys")  # keys taken away while running

    wait_until(lambda: any("permission" in str(e) for e in errors), timeout=20)
    # ... and they keep serving once the rights are back, instead of having died.
    acl.admin.execute_command("ACL", "SETUSER", user, f"~{namespace}:{{default}}:*")
    done = []
    queue.on("job_success", done.append)
    queue.submit_job("proc.outcome")
    wait_until(lambda: done, timeout=20)


@pytest.fixture
def evicting_policy(acl):
    acl.admin.config_set("maxmemory-policy", "allkeys-lru")
    yield
    acl.admin.config_set("maxmemory-policy", "noeviction")


@pytest.mark.timeout(60)
def test_a_user_without_config_get_starts_and_runs_jobs_without_the_maxmemory_check(
        acl, queues, namespace, caplog, evicting_policy):
    password = uuid.uuid4().hex
    user = acl.add_user(namespace, password)
    caplog.set_level(logging.WARNING, logger="greenq")
    queue = queues(OUTCOME, redis_url=acl.url(user, password), namespace=namespace)
    done = []
    queue.on("job_success", done.append)

    queue.start()
    queue.submit_job("proc.outcome")

    wait_until(lambda: done, timeout=20)
    assert set(acl.denials(user)) <= OPTIONAL_COMMANDS
    assert "maxmemory-policy" not in caplog.text


@pytest.mark.timeout(60)
def test_a_user_with_config_get_is_warned_about_an_evicting_maxmemory_policy(
        acl, queues, namespace, caplog, evicting_policy):
    password = uuid.uuid4().hex
    user = acl.add_user(namespace, password, extra=("+config|get",))
    caplog.set_level(logging.WARNING, logger="greenq")

    queues(OUTCOME, redis_url=acl.url(user, password), namespace=namespace).start()

    assert "config|get" not in acl.denials(user)
    assert "maxmemory-policy is allkeys-lru" in caplog.text


# -- passwords never shown -------------------------------------------------------------


def exception_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text, f"the password leaked in: {text[:2000]}"


@pytest.fixture
def secret_user(acl, namespace) -> str:
    """An ACL user of this test's namespace whose password is SECRET."""
    return acl.add_user(namespace, SECRET)


CALLS = {
    "submit_job": lambda q: q.submit_job("proc.outcome"),
    "submit_jobs": lambda q: q.submit_jobs([{"task_id": "proc.outcome"}]),
    "stats": lambda q: q.stats(),
    "failed_jobs": lambda q: q.failed_jobs(),
    "retry_failed_jobs": lambda q: q.retry_failed_jobs(),
    "delete_failed_jobs": lambda q: q.delete_failed_jobs(),
    "force_flush_stale_jobs": lambda q: q.force_flush_stale_jobs(),
    "start": lambda q: q.start(),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["wrong-password", "unreachable"])
def test_a_password_never_appears_in_exceptions_reprs_or_logs_of_a_queue(
        acl, secret_user, queues, namespace, caplog, where):
    caplog.set_level(logging.DEBUG)
    if where == "wrong-password":
        other = acl.add_user(namespace, "not-the-" + uuid.uuid4().hex)
        url = acl.url(other, SECRET)
    else:
        url = f"redis://{secret_user}:{SECRET}@127.0.0.1:{free_port()}/0"
    queue = queues(OUTCOME, redis_url=url, namespace=namespace)
    texts = [str(queue), repr(queue)]

    for name, call in CALLS.items():
        with pytest.raises(redis.ConnectionError) as caught:
            call(queue)
        if where == "wrong-password":
            assert isinstance(caught.value, redis.AuthenticationError), name
        texts += exception_texts(caught.value)

    texts += [caplog.text, str(queue), repr(queue)]
    assert_no_secret(*texts)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["wrong-password", "unreachable"])
def test_a_password_never_appears_in_cli_output(acl, secret_user, namespace, runs, where):
    if where == "wrong-password":
        url = acl.url(secret_user, "x" + SECRET + "x")  # still contains SECRET, and is wrong
    else:
        url = f"redis://{secret_user}:{SECRET}@127.0.0.1:{free_port()}/0"
    common = ["--redis-url", url, "--namespace", namespace]
    for command in (["stats"], ["stats", "--json"], ["submit", "proc.outcome"], ["failed", "list"],
                    ["failed", "retry"], ["failed", "delete", "--yes"], ["flush-stale"], ["inspect"]):
        result = greenq(*command, *common)
        assert result.returncode == 1, (command, result.stderr)
        failure = "authentication failed" if where == "wrong-password" else "cannot reach Redis"
        assert result.stderr.startswith(f"greenq: {failure} at 127.0.0.1:"), result.stderr
        assert_no_secret(result.stdout, result.stderr)
    for children in ("0", "1"):
        run = runs(OUTCOME, "-c", children, "--log-level", "DEBUG", *common)
        try:
            status = run.process.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"greenq run did not exit:\n{run.log()}")
        assert status == 1, run.log()
        assert_no_secret(run.log())


def child_pids(parent: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if entry.isdigit() and int(stat.read().rsplit(")", 1)[1].split()[1]) == parent:
                    pids.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.timeout(180)
def test_a_password_never_appears_in_debug_logs_of_normal_operation_and_an_outage(
        acl, secret_user, queues, namespace, caplog, runs):
    caplog.set_level(logging.DEBUG)
    url = acl.url(secret_user, SECRET)
    common = ["--redis-url", url, "--namespace", namespace]
    queue = queues(OUTCOME, redis_url=url, namespace=namespace, worker_count=4)
    errors = []
    queue.on("error", errors.append)
    exercise_queue(queue)

    # An outage seen by running workers: the user's connections are cut and
    # its password changed, so every reconnect fails authentication.
    queue = queues(OUTCOME, redis_url=url, namespace=namespace, worker_count=4)
    queue.on("error", errors.append)
    queue.start()
    acl.admin.execute_command("ACL", "SETUSER", secret_user, "resetpass",
                              ">other-" + uuid.uuid4().hex)
    acl.admin.execute_command("CLIENT", "KILL", "USER", secret_user)
    wait_until(lambda: errors, timeout=30)
    acl.admin.execute_command("ACL", "SETUSER", secret_user, "resetpass", ">" + SECRET)
    queue.submit_job("proc.outcome")
    wait_until(lambda: queue.stats()["pending"] == 0, timeout=30)
    queue.shutdown(timeout=10)
    checker = queues(redis_url=url, namespace=namespace)  # never started: counts only

    run = runs(OUTCOME, "-c", "1", "-w", "2", "--log-level", "DEBUG", *common)
    outputs = []
    for command in (["submit", "proc.outcome", "--params", '{"fail": 1}'],
                    ["submit", "proc.outcome"], ["stats"], ["stats", "--json"], ["inspect"],
                    ["flush-stale"]):
        result = greenq(*command, *common)
        assert result.returncode == 0, result.stderr
        outputs += [result.stdout, result.stderr]
    wait_until(lambda: checker.stats()["failed"] == 1, timeout=60, interval=0.2)
    # `ps` shows the master's --redis-url (the operator's choice: docs/acl.md
    # says to prefer $GREENQ_REDIS_URL), but never a child's command line.
    children = wait_until(lambda: child_pids(run.process.pid), timeout=30)
    outputs += [command_line(pid) for pid in children]
    for command in (["failed", "list"], ["failed", "list", "--json"], ["failed", "retry"],
                    ["failed", "delete", "--yes"]):
        result = greenq(*command, *common)
        assert result.returncode == 0, result.stderr
        outputs += [result.stdout, result.stderr]
    assert run.stop() == 0
    log = run.log()
    assert "DEBUG" in log or "INFO" in log  # the run did log

    texts = outputs + [log, caplog.text, str(queue), repr(queue), str(checker), repr(checker)]
    for error in errors:
        texts += exception_texts(error)
    assert_no_secret(*texts)
