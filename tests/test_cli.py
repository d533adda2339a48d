"""The `greenq` command: every sub-command's output and exit status, run as a
real subprocess against the private redis-server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import redis

from conftest import TASKS, wait_until
from queue_state import unfinished

GREENQ = [sys.executable, "-m", "greenq"]
UNREACHABLE = "redis://127.0.0.1:1/0"
SECRET = "Sup3rS3cretPw"


ENV_SETTINGS = ("GREENQ_REDIS_URL", "REDIS_URL", "GREENQ_NAMESPACE", "GREENQ_QUEUE")


def clean_env(env: dict | None = None) -> dict:
    """This environment without greenq's settings, plus `env`."""
    full_env = {k: v for k, v in os.environ.items() if k not in ENV_SETTINGS}
    full_env.update(env or {})
    return full_env


def greenq(*args: str, env: dict | None = None, timeout: float = 60,
           input: str | None = None) -> subprocess.CompletedProcess:
    """Run `greenq ARGS`; greenq's environment variables only when `env` sets
    them; stdin is `input`, or empty (never the terminal pytest runs on)."""
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(GREENQ + list(args), capture_output=True, text=True, env=clean_env(env),
                          timeout=timeout, **stdin)


@pytest.fixture
def common(redis_url, namespace) -> list[str]:
    return ["--redis-url", redis_url, "--namespace", namespace]


def prefix_of(namespace: str) -> str:
    return f"{namespace}:{{default}}:"


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("greenq: ")
    return lines[0]


def fail_jobs(make_queue, count: int) -> list[str]:
    """`count` jobs in the failed queue (run by a worker in this process)."""
    queue = make_queue("proc_outcome")
    failed = []
    queue.on("job_fail", failed.append)
    queue.start()
    ids = [queue.submit_job("proc.outcome", resource_id=f"res-{n}", params={"fail": f"no {n}"})
           for n in range(count)]
    wait_until(lambda: len(failed) == count, timeout=20)
    queue.shutdown()
    return ids


# -- submit -------------------------------------------------------------------


def test_submit_prints_the_new_jobs_id_and_the_job_runs_with_the_given_params(
        common, make_queue, r, namespace):
    result = greenq("submit", "proc.outcome", "--resource", "res-A", "--params",
                    '{"a": [1, 2], "b": {"c": null}}', "--retries", "2", *common)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    job_id = result.stdout.strip()
    assert len(result.stdout.splitlines()) == 1 and job_id
    prefix = prefix_of(namespace)
    record = r.hgetall(prefix + f"job:{job_id}")
    assert record[b"task"] == b"proc.outcome"
    assert record[b"res"] == b"res-A"
    assert record[b"retries"] == b"2"
    assert r.lrange(prefix + "pending", 0, -1) == [job_id.encode()]

    queue = make_queue("proc_outcome")
    done = []
    queue.on("job_success", done.append)
    queue.start()
    wait_until(lambda: done, timeout=20)
    assert (done[0].id, done[0].resource_id, done[0].params) == \
        (job_id, "res-A", {"a": [1, 2], "b": {"c": None}})


def test_submit_with_params_that_are_not_json_prints_one_line_and_exits_2(common, r, namespace):
    result = greenq("submit", "proc.outcome", "--params", "{not json", *common)

    assert result.returncode == 2
    assert result.stdout == ""
    line = one_line_error(result)
    assert "--params is not valid JSON" in line
    assert r.keys(namespace + ":*") == []


def test_submit_with_a_negative_retry_count_is_a_usage_error(common, r, namespace):
    result = greenq("submit", "proc.outcome", "--retries", "-1", *common)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--retries" in result.stderr
    assert r.keys(namespace + ":*") == []


def test_submit_with_an_empty_task_id_prints_one_line_and_exits_2(common, r, namespace):
    result = greenq("submit", "", *common)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "task_id must not be empty" in one_line_error(result)
    assert r.keys(namespace + ":*") == []


def test_the_queue_option_selects_which_queue_submit_and_stats_use(common, r, namespace):
    result = greenq("submit", "proc.outcome", "--queue", "other", *common)

    assert result.returncode == 0
    job_id = result.stdout.strip()
    assert r.lrange(f"{namespace}:{{other}}:pending", 0, -1) == [job_id.encode()]
    assert json.loads(greenq("stats", "--json", "--queue", "other", *common).stdout)["pending"] == 1
    assert json.loads(greenq("stats", "--json", *common).stdout)["pending"] == 0


# -- stats --------------------------------------------------------------------


def test_stats_prints_pending_active_failed_and_waiting_as_text_and_as_json(
        common, make_queue, r, namespace):
    queue = make_queue()
    queue.submit_job("proc.outcome", resource_id="res-A")
    queue.submit_job("proc.outcome", resource_id="res-A")
    queue.submit_job("proc.outcome")

    as_json = greenq("stats", "--json", *common)
    as_text = greenq("stats", *common)

    assert as_json.returncode == 0 and as_text.returncode == 0
    assert as_json.stderr == "" and as_text.stderr == ""
    numbers = json.loads(as_json.stdout)
    assert {k: numbers[k] for k in ("pending", "active", "failed", "waiting")} == \
        {"pending": 2, "active": 0, "failed": 0, "waiting": 1}
    text = dict(line.split() for line in as_text.stdout.splitlines())
    assert {k: int(v) for k, v in text.items()} == numbers


def test_stats_on_an_empty_queue_prints_zeros(common):
    result = greenq("stats", "--json", *common)

    assert result.returncode == 0
    numbers = json.loads(result.stdout)
    assert all(numbers[k] == 0 for k in ("pending", "active", "failed", "waiting", "workers"))


# -- failed list | retry | delete ------------------------------------------------


def test_failed_list_shows_each_failed_job_with_its_task_resource_attempts_and_error(
        common, make_queue):
    ids = fail_jobs(make_queue, 2)

    result = greenq("failed", "list", *common)
    as_json = greenq("failed", "list", "--json", *common)

    assert result.returncode == 0 and as_json.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for n, (job_id, line) in enumerate(zip(ids, lines)):
        assert line.startswith(job_id)
        assert "proc.outcome" in line and f"resource=res-{n}" in line and "attempts=1" in line
        assert line.endswith(f"ValueError: asked to fail: no {n}")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [rec["id"] for rec in records] == ids
    assert records[0]["task_id"] == "proc.outcome"
    assert records[0]["params"] == {"fail": "no 0"}
    assert records[0]["resource_id"] == "res-0"
    assert records[0]["attempts"] == 1 and records[0]["retries"] == 0
    assert "Traceback" in records[0]["error"] and "ValueError: asked to fail: no 0" in records[0]["error"]


def test_failed_retry_puts_failed_jobs_back_on_the_queue(common, make_queue, r, namespace):
    ids = fail_jobs(make_queue, 2)

    result = greenq("failed", "retry", *common)

    assert result.returncode == 0
    assert result.stdout.strip() == "2 jobs retried"
    prefix = prefix_of(namespace)
    assert r.llen(prefix + "failed") == 0
    assert sorted(r.lrange(prefix + "pending", 0, -1)) == sorted(i.encode() for i in ids)
    assert greenq("failed", "list", *common).stdout == "no failed jobs\n"
    assert greenq("failed", "retry", *common).stdout.strip() == "0 jobs retried"


def test_failed_delete_removes_failed_jobs_and_their_records(common, make_queue, r, namespace):
    ids = fail_jobs(make_queue, 3)

    result = greenq("failed", "delete", "--yes", *common)

    assert result.returncode == 0
    assert result.stdout.strip() == "3 jobs deleted"
    prefix = prefix_of(namespace)
    assert r.llen(prefix + "failed") == 0
    assert all(not unfinished(r, prefix + f"job:{job_id}") for job_id in ids)
    assert json.loads(greenq("stats", "--json", *common).stdout)["failed"] == 0


# -- flush-stale -------------------------------------------------------------------


def test_flush_stale_reclaims_the_jobs_of_a_killed_worker_retrying_or_failing_each(
        common, make_queue, r, redis_url, namespace, tmp_path):
    key = namespace + ":rec"
    queue = make_queue()
    keep = queue.submit_job("proc.sleep", retries=1,
                            params={"url": redis_url, "key": key, "n": 1, "first": 60})
    lose = queue.submit_job("proc.sleep", resource_id="res-B",
                            params={"url": redis_url, "key": key, "n": 2, "first": 60})
    with open(tmp_path / "run.log", "wb") as log:
        worker = subprocess.Popen(GREENQ + ["run", os.path.join(TASKS, "proc_sleep.py"), *common],
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: r.llen(key + ":started") == 2, timeout=30)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)

    outputs = []

    def flushed():
        result = greenq("flush-stale", *common)
        assert result.returncode == 0 and result.stderr == ""
        outputs.append(result.stdout.strip())
        return result.stdout.strip() != "0 stale jobs flushed"

    wait_until(flushed, timeout=20, interval=0.2)
    assert outputs[-1] == "2 stale jobs flushed"
    assert set(outputs[:-1]) <= {"0 stale jobs flushed"}
    prefix = prefix_of(namespace)
    assert r.lrange(prefix + "pending", 0, -1) == [keep.encode()]
    assert r.lrange(prefix + "failed", 0, -1) == [lose.encode()]
    assert r.hlen(prefix + "locks") == 0
    listed = greenq("failed", "list", *common).stdout
    assert lose in listed and "stale" in listed
    numbers = json.loads(greenq("stats", "--json", *common).stdout)
    assert (numbers["pending"], numbers["active"], numbers["failed"]) == (1, 0, 1)
    assert greenq("flush-stale", *common).stdout.strip() == "0 stale jobs flushed"


# -- inspect -----------------------------------------------------------------------


def test_inspect_shows_the_running_job_and_the_locked_resource_with_its_waiting_count(
        common, make_queue, r, redis_url, namespace):
    key = namespace + ":rec"
    queue = make_queue("proc_sleep", worker_count=1)
    queue.start()
    params = {"url": redis_url, "key": key, "n": 1, "first": 60}
    running = queue.submit_job("proc.sleep", resource_id="res-A", params=params)
    queue.submit_jobs([{"task_id": "proc.sleep", "resource_id": "res-A", "params": params}] * 2)
    wait_until(lambda: r.llen(key + ":started") == 1, timeout=20)

    try:
        text = greenq("inspect", *common)
        as_json = greenq("inspect", "--json", *common)
    finally:
        queue.shutdown(timeout=0)

    assert text.returncode == 0 and as_json.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0].startswith("worker processes (1 live, ")
    assert f" pid {os.getpid()}  worker  busy=1/1  " in lines[1]
    assert lines[2] == "running jobs (1 shown):"
    assert lines[3].split()[:3] == [running, "proc.sleep", "resource=res-A"]
    assert f":{os.getpid()}:" in lines[3]
    assert lines[4] == "locked resources (1 shown):"
    assert lines[5].split() == ["res-A", "held", "by", running, "2", "waiting"]
    report = json.loads(as_json.stdout)
    [process] = report["processes"]
    assert (process["pid"], process["role"], process["busy"], process["capacity"]) == \
        (os.getpid(), "worker", 1, 1)
    [job] = report["running"]
    assert (job["id"], job["task"], job["resource"], job["attempts"]) == \
        (running, "proc.sleep", "res-A", 1)
    assert job["timeout"] == 1.0
    assert report["locked"] == [{"resource": "res-A", "holder": running, "waiting": 2}]


def test_inspect_on_an_idle_queue_shows_no_process_nothing_running_and_nothing_locked(common):
    result = greenq("inspect", "--json", *common)

    assert result.returncode == 0
    assert json.loads(result.stdout) == {"processes": [], "running": [], "locked": []}


# -- errors: unreachable Redis, bad task files, secrets ----------------------------------


COMMANDS = [
    ["stats"], ["stats", "--json"], ["submit", "proc.outcome"], ["failed", "list"],
    ["failed", "retry"], ["failed", "delete", "--yes"], ["flush-stale"], ["inspect"],
    ["run", os.path.join(TASKS, "proc_outcome.py"), "--wait-for-redis", "0"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_unreachable_redis_is_one_line_and_exit_status_1(command):
    result = greenq(*command, "--redis-url", UNREACHABLE)

    assert result.returncode == 1
    assert result.stdout == ""
    line = one_line_error(result)
    assert line.startswith("greenq: cannot reach Redis at 127.0.0.1:1/0")


@pytest.mark.parametrize("url", [
    f"redis://:{SECRET}@127.0.0.1:1/0",
    f"redis://alice:{SECRET}@127.0.0.1:1/3",
], ids=["password", "user-and-password"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_password_in_the_redis_url_never_appears_in_any_output(command, url):
    result = greenq(*command, "--redis-url", url)

    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    assert "cannot reach Redis at 127.0.0.1:1/" in result.stderr


def test_a_password_in_greenq_redis_url_never_appears_in_any_output():
    result = greenq("stats", env={"GREENQ_REDIS_URL": f"redis://:{SECRET}@127.0.0.1:1/0"})

    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    assert "cannot reach Redis at 127.0.0.1:1/0" in result.stderr


def test_a_password_in_a_malformed_redis_url_never_appears_in_any_output():
    result = greenq("stats", "--redis-url", f"http://:{SECRET}@127.0.0.1:1/0")

    assert result.returncode == 2
    assert SECRET not in result.stdout + result.stderr
    assert "bad Redis URL" in one_line_error(result)


HTTP_400_SERVER = """
import socket
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 400 Bad Request\\r\\nContent-Length: 0\\r\\n"
                 b"Connection: close\\r\\n\\r\\n")
    conn.close()
"""


@pytest.fixture(scope="module", params=["http.server", "HTTP 400 socket server"])
def not_redis_port(request):
    """The port of a server that is not Redis: Python's http.server, or a
    socket server that answers every request with an HTTP 400."""
    if request.param == "http.server":
        args = [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"]
    else:
        args = [sys.executable, "-u", "-c", HTTP_400_SERVER]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..." or "N"
        port = int(first.split("port ")[1].split()[0] if "port " in first else first)
        yield port
    finally:
        server.kill()
        server.wait(10)


@pytest.mark.parametrize("command", [
    ["stats"], ["submit", "proc.outcome"], ["run", os.path.join(TASKS, "proc_outcome.py")],
    ["run", os.path.join(TASKS, "proc_outcome.py"), "-c", "2"],
], ids=" ".join)
def test_a_server_that_is_not_redis_is_one_line_and_exit_status_1(not_redis_port, command):
    result = greenq(*command, "--redis-url", f"redis://127.0.0.1:{not_redis_port}/0")

    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    line = one_line_error(result)
    assert line.startswith(f"greenq: the server at 127.0.0.1:{not_redis_port}/0 is not Redis")


@pytest.fixture(scope="module")
def password_redis_port():
    """A private redis-server that requires the password SECRET."""
    from redis_server import free_port

    port = free_port()
    directory = tempfile.mkdtemp(prefix="greenq-redis-pw-")
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--dir", directory, "--save", "", "--appendonly", "no",
                               "--requirepass", SECRET],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, password=SECRET, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert server.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)
    yield port
    client.close()
    server.kill()
    server.wait(10)
    shutil.rmtree(directory, ignore_errors=True)


WRONG = "WrongPassword123"


@pytest.mark.parametrize("credentials, says", [
    (f":{WRONG}@", "Redis refused the password"),
    (f"alice:{WRONG}@", "Redis refused the user name and password"),
    ("", "the URL gives no password"),
], ids=["wrong password", "wrong user and password", "no password"])
@pytest.mark.parametrize("command", [
    ["stats"], ["submit", "proc.outcome"], ["run", os.path.join(TASKS, "proc_outcome.py")],
    ["run", os.path.join(TASKS, "proc_outcome.py"), "-c", "2"],
], ids=" ".join)
def test_a_wrong_or_missing_password_says_authentication_failed_in_one_line_without_it(
        password_redis_port, command, credentials, says):
    url = f"redis://{credentials}127.0.0.1:{password_redis_port}/0"

    result = greenq(*command, "--redis-url", url)

    assert result.returncode == 1
    assert result.stdout == ""
    line = one_line_error(result)
    assert line.startswith(f"greenq: authentication failed at 127.0.0.1:{password_redis_port}/0: ")
    assert says in line
    assert WRONG not in result.stderr and SECRET not in result.stderr
    assert "HELLO" not in line


def test_the_right_password_works_and_never_appears_in_the_output_of_any_command(
        password_redis_port, namespace, tmp_path):
    url = f"redis://:{SECRET}@127.0.0.1:{password_redis_port}/0"
    common = ["--redis-url", url, "--namespace", namespace]
    outputs = []

    def call(*args):
        result = greenq(*args, *common)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, result.stderr
        return result.stdout

    call("submit", "proc.outcome", "--params", '{"fail": "on purpose"}')
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            GREENQ + ["run", os.path.join(TASKS, "proc_outcome.py"), "-c", "1", "--log-level", "DEBUG",
                      *common], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: json.loads(call("stats", "--json"))["failed"] == 1, timeout=30)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    outputs.append(log_path.read_text(errors="replace"))
    call("stats")
    call("inspect")
    call("inspect", "--json")
    call("failed", "list")
    call("failed", "list", "--json")
    call("flush-stale")
    call("failed", "retry")
    call("failed", "delete", "--yes")

    assert "greenq running" in outputs[-9]
    assert "ValueError: asked to fail: on purpose" in outputs[-5]
    assert all(SECRET not in output for output in outputs)


@pytest.mark.parametrize("spec, message", [
    ("/nonexistent/dir/tasks.py", "task file not found: /nonexistent/dir/tasks.py"),
    ("no_such_task_module_xyz", "no task module named 'no_such_task_module_xyz'"),
], ids=["file", "module"])
def test_run_with_an_unknown_task_file_or_module_prints_one_line_and_exits_2(common, spec, message):
    result = greenq("run", spec, *common, timeout=30)

    assert result.returncode == 2
    assert result.stdout == ""
    assert one_line_error(result) == f"greenq: {message}"


BROKEN_TASKS = {
    # kind: (task file text, helper file text or None, what the line must say)
    "syntax error": ('id = "broken.task"\n\ndef perform(params:\n    pass\n', None,
                     ["line 3", "SyntaxError: '(' was never closed"]),
    "import error": ('import no_such_module_xyz\n\nid = "broken.task"\n', None,
                     ["line 1", "ModuleNotFoundError: No module named 'no_such_module_xyz'"]),
    "syntax error in an imported module": (
        'id = "broken.task"\n\nimport {helper}\n', "x = (\n",
        ["line 3", "SyntaxError: '(' was never closed", "{helper}.py, line 1"]),
}


@pytest.mark.parametrize("children", ["0", "2"], ids=["in-process", "-c 2"])
@pytest.mark.parametrize("form", ["file", "module"])
@pytest.mark.parametrize("kind", sorted(BROKEN_TASKS))
def test_run_with_a_task_file_that_does_not_load_prints_one_line_and_exits_2(
        common, namespace, tmp_path, kind, form, children):
    text, helper_text, expected = BROKEN_TASKS[kind]
    module, helper = f"broken_tasks_{namespace}", f"broken_helper_{namespace}"
    path = tmp_path / f"{module}.py"
    path.write_text(text.format(helper=helper))
    if helper_text is not None:
        (tmp_path / f"{helper}.py").write_text(helper_text)
    spec = str(path) if form == "file" else module
    command = os.path.join(os.path.dirname(sys.executable), "greenq")  # the installed command

    result = subprocess.run([command, "run", spec, "-c", children, *common], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    line = one_line_error(result)
    assert str(path) in line
    if form == "module":
        assert repr(module) in line
    for part in expected:
        assert part.format(helper=helper) in line


def test_run_with_a_file_that_defines_no_task_prints_one_line_and_exits_2(common, tmp_path):
    empty = tmp_path / "not_a_task.py"
    empty.write_text("x = 1\n")

    result = greenq("run", str(empty), *common, timeout=30)

    assert result.returncode == 2
    line = one_line_error(result)
    assert "defines no task" in line and str(empty) in line


def test_run_imports_a_task_module_by_name_from_the_current_directory(
        common, make_queue, r, namespace, tmp_path):
    module = "cwd_tasks_" + namespace
    (tmp_path / f"{module}.py").write_text('id = "cwd.task"\n\ndef perform(params):\n    pass\n')
    command = os.path.join(os.path.dirname(sys.executable), "greenq")  # the installed command
    job_id = make_queue().submit_job("cwd.task")
    job_key = f"{prefix_of(namespace)}job:{job_id}"
    with open(tmp_path / "run.log", "wb") as log:
        worker = subprocess.Popen([command, "run", module, "-c", "1", *common], cwd=tmp_path,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: not unfinished(r, job_key) or worker.poll() is not None, timeout=30)
        output = (tmp_path / "run.log").read_text(errors="replace")
        assert worker.poll() is None, output
        assert not unfinished(r, job_key)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert json.loads(greenq("stats", "--json", *common).stdout)["failed"] == 0


# -- where the Redis URL comes from ------------------------------------------------


@pytest.mark.parametrize("variables", [
    {"GREENQ_REDIS_URL": "{url}"},
    {"GREENQ_REDIS_URL": "{url}", "REDIS_URL": UNREACHABLE},
    {"REDIS_URL": "{url}"},
], ids=["GREENQ_REDIS_URL", "GREENQ_REDIS_URL-over-REDIS_URL", "REDIS_URL"])
def test_the_redis_url_comes_from_the_environment_when_no_option_gives_it(
        redis_url, namespace, r, variables):
    env = {name: value.format(url=redis_url) for name, value in variables.items()}

    submitted = greenq("submit", "proc.outcome", "--namespace", namespace, env=env)
    stats = greenq("stats", "--json", "--namespace", namespace, env=env)

    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert r.hget(prefix_of(namespace) + f"job:{job_id}", "task") == b"proc.outcome"
    assert stats.returncode == 0
    assert json.loads(stats.stdout)["pending"] == 1


def test_the_redis_url_option_wins_over_the_environment(redis_url, namespace, r):
    result = greenq("stats", "--json", "--redis-url", redis_url, "--namespace", namespace,
                    env={"GREENQ_REDIS_URL": UNREACHABLE, "REDIS_URL": UNREACHABLE})

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pending"] == 0


# -- help ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    [], ["run"], ["submit"], ["stats"], ["failed"], ["failed", "list"], ["failed", "retry"],
    ["failed", "delete"], ["flush-stale"], ["inspect"], ["demo"],
], ids=lambda c: " ".join(c) or "greenq")
def test_the_help_of_every_sub_command_exits_0(command):
    result = greenq(*command, "--help")

    assert result.returncode == 0
    assert result.stdout.startswith("Usage: ")
    assert result.stderr == ""
    if command and command[0] != "failed":
        assert "--redis-url" in result.stdout


def test_the_help_of_run_and_submit_lists_the_contracts_options():
    run = greenq("run", "--help").stdout
    submit = greenq("submit", "--help").stdout

    for option in ("-c,", "-w,", "--redis-url", "--namespace", "--queue", "--flush-stale-timeout",
                   "--serializer", "--log-level"):
        assert option in run
    for option in ("--resource", "--params", "--retries", "--redis-url", "--namespace", "--queue"):
        assert option in submit


# -- demo ----------------------------------------------------------------------------


def test_the_demo_runs_end_to_end_proves_the_lock_and_leaves_no_keys(redis_url, r):
    result = greenq("demo", "--jobs", "300", "--resources", "10", "-c", "2", "-w", "20",
                    "--redis-url", redis_url, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "300 jobs over 10 resources, 2 children x 20 workers" in result.stdout
    assert "succeeded 300, failed 0" in result.stdout
    assert "resource lock: checked on all 300 jobs, no resource ever ran two jobs at once" \
        in result.stdout
    assert r.keys("greenq-demo-*") == []


def test_the_demo_runs_in_the_namespace_given_and_leaves_no_keys_there(redis_url, r, namespace):
    with tempfile.TemporaryFile() as log:
        env = {k: v for k, v in os.environ.items() if k not in ("GREENQ_REDIS_URL", "REDIS_URL")}
        demo = subprocess.Popen(GREENQ + ["demo", "--jobs", "200", "--resources", "5", "-c", "1",
                                          "-w", "5", "--namespace", namespace,
                                          "--redis-url", redis_url],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until(lambda: r.keys(namespace + ":*") or demo.poll() is not None, timeout=60)
            seen_in_namespace = r.keys(namespace + ":*")
            seen_elsewhere = r.keys("greenq-demo-*")
            status = demo.wait(120)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait(10)
        log.seek(0)
        output = log.read().decode(errors="replace")

    assert status == 0, output
    assert "succeeded 200, failed 0" in output
    assert seen_in_namespace and seen_elsewhere == []
    assert all(key.startswith(f"{namespace}:{{default}}:".encode()) for key in seen_in_namespace)
    assert r.keys(namespace + ":*") == []


def test_the_demo_refuses_a_namespace_whose_queue_already_holds_keys_and_keeps_them(
        redis_url, r, namespace):
    r.rpush(f"{namespace}:{{default}}:pending", "a-job-of-someone-else")

    result = greenq("demo", "--jobs", "10", "--namespace", namespace, "--redis-url", redis_url)

    assert result.returncode == 2, result.stdout + result.stderr
    line = one_line_error(result)
    assert namespace in line and "already" in line
    assert r.lrange(f"{namespace}:{{default}}:pending", 0, -1) == [b"a-job-of-someone-else"]
    assert r.keys("greenq-demo-*") == []
