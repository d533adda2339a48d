"""The `greenq` command as an operator meets it (issue 12): the failed queue's
safety and wording, params from a file, a queue that was never used, where
the common options come from, containers (waiting for Redis, a bounded
graceful stop, Ctrl-C), and help texts. Real `greenq` subprocesses against
the private redis-server, as in tests/test_cli.py."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from conftest import TASKS, wait_until
from test_cli import GREENQ, clean_env, fail_jobs, greenq, one_line_error, prefix_of
from queue_state import unfinished


@pytest.fixture
def common(redis_url, namespace) -> list[str]:
    return ["--redis-url", redis_url, "--namespace", namespace]


def on_a_terminal(args: list[str], answer: str | None, timeout: float = 30) -> tuple[int, str]:
    """Run `greenq ARGS` with stdin, stdout and stderr on a pseudo-terminal;
    type `answer` once it has asked (a line ending in "]: "), or press
    Ctrl-C when `answer` is "^C". Returns the exit status and everything it
    wrote."""
    master, slave = pty.openpty()
    process = subprocess.Popen(GREENQ + args, stdin=slave, stdout=slave, stderr=slave,
                               env=clean_env())
    os.close(slave)
    output, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if answer is not None and not answered and output.rstrip(b" ").endswith(b"]:"):
                if answer == "^C":
                    # Past the prompt's text into its read: a signal that lands
                    # just before the read() call is only seen after it returns.
                    time.sleep(0.5)
                    process.send_signal(signal.SIGINT)
                else:
                    os.write(master, answer.encode() + b"\n")
                answered = True
            if not ready and process.poll() is not None:
                break
        status = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)
    return status, output.decode(errors="replace").replace("\r\n", "\n")


# -- 7. the failed queue -----------------------------------------------------------


def test_failed_delete_without_a_terminal_or_yes_refuses_in_one_line_with_status_2(
        common, make_queue, r, namespace):
    ids = fail_jobs(make_queue, 2)

    result = greenq("failed", "delete", *common)

    assert result.returncode == 2
    assert result.stdout == ""
    line = one_line_error(result)
    assert "--yes" in line and "terminal" in line
    assert r.lrange(prefix_of(namespace) + "failed", 0, -1) == [i.encode() for i in ids]


def test_failed_delete_with_yes_deletes_without_asking(common, make_queue, r, namespace):
    fail_jobs(make_queue, 2)

    result = greenq("failed", "delete", "--yes", *common)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "2 jobs deleted\n"
    assert r.llen(prefix_of(namespace) + "failed") == 0


@pytest.mark.parametrize("answer, deleted", [("y", True), ("n", False)])
def test_failed_delete_on_a_terminal_asks_first_and_deletes_only_on_yes(
        common, make_queue, r, namespace, answer, deleted):
    ids = fail_jobs(make_queue, 3)

    status, output = on_a_terminal(["failed", "delete", *common], answer)

    assert "Delete the 3 failed jobs" in output and namespace in output
    failed = r.lrange(prefix_of(namespace) + "failed", 0, -1)
    if deleted:
        assert status == 0, output
        assert "3 jobs deleted" in output
        assert failed == []
    else:
        assert status == 1, output
        assert "nothing deleted" in output
        assert failed == [i.encode() for i in ids]
    assert "Traceback" not in output and "Aborted!" not in output


def test_ctrl_c_at_the_failed_delete_prompt_exits_130_and_deletes_nothing(
        common, make_queue, r, namespace):
    ids = fail_jobs(make_queue, 1)

    status, output = on_a_terminal(["failed", "delete", *common], "^C")

    assert status == 130, output
    assert "Delete the 1 failed job " in output
    assert "Aborted!" not in output and "Traceback" not in output
    assert r.lrange(prefix_of(namespace) + "failed", 0, -1) == [ids[0].encode()]


def test_failed_delete_on_a_terminal_with_no_failed_job_asks_nothing(common, make_queue):
    make_queue().submit_job("proc.outcome")  # a queue in use, with no failed job

    status, output = on_a_terminal(["failed", "delete", *common], answer=None)

    assert status == 0
    assert output.strip() == "no failed jobs"


def test_failed_list_of_an_empty_failed_queue_says_no_failed_jobs(common, make_queue):
    make_queue().submit_job("proc.outcome")

    text = greenq("failed", "list", *common)
    as_json = greenq("failed", "list", "--json", *common)

    assert text.returncode == 0 and as_json.returncode == 0
    assert text.stdout == "no failed jobs\n"
    assert as_json.stdout == ""  # zero JSON lines: nothing for a script to skip


def test_counts_of_one_say_job_not_jobs_in_retry_and_delete(common, make_queue):
    fail_jobs(make_queue, 1)
    assert greenq("failed", "retry", *common).stdout == "1 job retried\n"
    assert greenq("failed", "retry", *common).stdout == "0 jobs retried\n"


def test_a_count_of_one_says_job_in_delete(common, make_queue):
    fail_jobs(make_queue, 1)
    assert greenq("failed", "delete", "--yes", *common).stdout == "1 job deleted\n"


def test_a_count_of_one_says_stale_job_in_flush_stale(common, make_queue, r, redis_url, namespace,
                                                       tmp_path):
    key = namespace + ":rec"
    make_queue().submit_job("proc.sleep", params={"url": redis_url, "key": key, "first": 60})
    with open(tmp_path / "run.log", "wb") as log:
        worker = subprocess.Popen(GREENQ + ["run", os.path.join(TASKS, "proc_sleep.py"), *common],
                                  stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    try:
        wait_until(lambda: r.llen(key + ":started") == 1, timeout=30)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    outputs = []

    def flushed():
        outputs.append(greenq("flush-stale", *common).stdout)
        return outputs[-1] != "0 stale jobs flushed\n"

    wait_until(flushed, timeout=20, interval=0.2)
    assert outputs[-1] == "1 stale job flushed\n"


def test_failed_list_shows_the_errors_last_line_and_with_verbose_the_whole_traceback(
        common, make_queue):
    [job_id] = fail_jobs(make_queue, 1)

    short = greenq("failed", "list", *common)
    verbose = greenq("failed", "list", "--verbose", *common)

    assert short.returncode == 0 and verbose.returncode == 0
    [line] = short.stdout.splitlines()
    assert line.startswith(job_id) and line.endswith("ValueError: asked to fail: no 0")
    assert "Traceback" not in short.stdout
    lines = verbose.stdout.splitlines()
    assert lines[0].startswith(job_id) and "proc.outcome" in lines[0]
    assert lines[1].strip() == "Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in lines[1:] if line)
    assert 'raise ValueError(f"asked to fail' in verbose.stdout
    assert lines[-1].strip() == "ValueError: asked to fail: no 0"


# -- 8. params that do not fit a command line ----------------------------------------


BIG_PARAMS = {"rows": [{"n": n, "text": "x" * 50} for n in range(2000)], "name": "é"}


def test_submit_reads_params_from_the_file_named_after_an_at_sign(common, make_queue, tmp_path):
    path = tmp_path / "params.json"
    path.write_text(json.dumps(BIG_PARAMS), encoding="utf-8")

    result = greenq("submit", "proc.outcome", "--params", f"@{path}", *common)

    assert result.returncode == 0, result.stderr
    assert_params(make_queue, result.stdout.strip(), BIG_PARAMS)


def test_submit_reads_params_from_stdin_when_given_a_dash(common, make_queue):
    result = greenq("submit", "proc.outcome", "--params", "-", *common,
                    input=json.dumps(BIG_PARAMS))

    assert result.returncode == 0, result.stderr
    assert_params(make_queue, result.stdout.strip(), BIG_PARAMS)


def assert_params(make_queue, job_id: str, expected) -> None:
    """The job `job_id` runs with `expected` as its params."""
    queue = make_queue("proc_outcome")
    done = []
    queue.on("job_success", done.append)
    queue.start()
    wait_until(lambda: done, timeout=20)
    assert (done[0].id, done[0].params) == (job_id, expected)


@pytest.mark.parametrize("case", ["missing file", "bad JSON in the file", "bad JSON on stdin",
                                  "a directory"])
def test_submit_with_a_params_file_that_is_missing_or_not_json_is_one_line_and_status_2(
        common, r, namespace, tmp_path, case):
    path = tmp_path / "params.json"
    argument, stdin = f"@{path}", None
    if case == "bad JSON in the file":
        path.write_text('{"a": ')
    elif case == "bad JSON on stdin":
        argument, stdin = "-", '{"a": '
    elif case == "a directory":
        argument = f"@{tmp_path}"

    result = greenq("submit", "proc.outcome", "--params", argument, *common, input=stdin)

    assert result.returncode == 2
    assert result.stdout == ""
    line = one_line_error(result)
    if case == "missing file":
        assert f"cannot read {path}" in line and "No such file" in line
    elif case == "a directory":
        assert f"cannot read {tmp_path}" in line
    else:
        assert "is not valid JSON" in line
        assert ("stdin" if stdin else str(path)) in line
    assert r.keys(namespace + ":*") == []


# -- 3. is anybody working? ------------------------------------------------------------


READ_COMMANDS = [["stats"], ["stats", "--json"], ["inspect"], ["inspect", "--json"],
                 ["failed", "list"], ["failed", "list", "--json"], ["failed", "retry"],
                 ["failed", "delete", "--yes"], ["flush-stale"]]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_a_queue_that_was_never_used_gets_a_one_line_note_on_stderr(common, namespace, command):
    result = greenq(*command, *common, "--queue", "defualt")

    assert result.returncode == 0, result.stderr
    line = one_line_error(result)
    assert "never been used" in line
    assert "'defualt'" in line and repr(namespace) in line
    assert "--namespace" in line and "--queue" in line
    if command == ["stats", "--json"]:
        assert json.loads(result.stdout)["pending"] == 0  # stdout stays one clean JSON object


@pytest.mark.parametrize("used_by", ["a submitted job", "a worker that ran and stopped",
                                     "a job that succeeded"])
def test_a_queue_that_was_used_gets_no_note(common, make_queue, used_by):
    if used_by == "a submitted job":
        make_queue().submit_job("proc.outcome")
    else:
        queue = make_queue("proc_outcome")
        done = []
        queue.on("job_success", done.append)
        queue.start()
        if used_by == "a job that succeeded":
            queue.submit_job("proc.outcome", resource_id="res-A")
            wait_until(lambda: done, timeout=20)
        queue.shutdown()

    for command in (["stats"], ["inspect"], ["failed", "list"]):
        result = greenq(*command, *common)
        assert result.returncode == 0 and result.stderr == "", (command, result.stderr)


def test_the_namespace_and_queue_come_from_greenq_namespace_and_greenq_queue(
        redis_url, namespace, r):
    env = {"GREENQ_NAMESPACE": namespace, "GREENQ_QUEUE": "from-env"}

    submitted = greenq("submit", "proc.outcome", "--redis-url", redis_url, env=env)
    stats = greenq("stats", "--json", "--redis-url", redis_url, env=env)
    option_wins = greenq("stats", "--json", "--redis-url", redis_url, "--queue", "other", env=env)

    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert r.lrange(f"{namespace}:{{from-env}}:pending", 0, -1) == [job_id.encode()]
    assert json.loads(stats.stdout)["pending"] == 1 and stats.stderr == ""
    assert json.loads(option_wins.stdout)["pending"] == 0
    assert "'other'" in option_wins.stderr  # never used: the option was taken, not the variable


def test_the_common_options_may_come_before_the_sub_command(redis_url, namespace, r):
    before = ["--redis-url", redis_url, "--namespace", namespace, "--queue", "early"]

    submitted = greenq(*before, "submit", "proc.outcome")
    stats = greenq(*before, "stats", "--json")
    failed = greenq(*before, "failed", "list")

    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert r.lrange(f"{namespace}:{{early}}:pending", 0, -1) == [job_id.encode()]
    assert json.loads(stats.stdout)["pending"] == 1 and stats.stderr == ""
    assert failed.stdout == "no failed jobs\n" and failed.stderr == ""


def test_a_common_option_after_the_sub_command_wins_over_the_same_before_it(
        redis_url, namespace, r):
    result = greenq("--namespace", "wrong", "--queue", "wrong", "--redis-url", "redis://x:1/0",
                    "submit", "proc.outcome",
                    "--namespace", namespace, "--queue", "late", "--redis-url", redis_url,
                    env={"GREENQ_NAMESPACE": "wrong-too"})

    assert result.returncode == 0, result.stderr
    assert r.lrange(f"{namespace}:{{late}}:pending", 0, -1) == [result.stdout.strip().encode()]
    assert r.keys("wrong*") == []


def test_run_takes_the_common_options_before_the_sub_command(common, make_queue, r, namespace,
                                                             tmp_path):
    job_id = make_queue().submit_job("proc.outcome")
    with open(tmp_path / "run.log", "wb") as log:
        worker = subprocess.Popen(GREENQ + [*common, "run", os.path.join(TASKS, "proc_outcome.py")],
                                  stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    try:
        wait_until(lambda: not unfinished(r, f"{prefix_of(namespace)}job:{job_id}")
                   or worker.poll() is not None, timeout=30)
        assert worker.poll() is None, (tmp_path / "run.log").read_text()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert json.loads(greenq("stats", "--json", *common).stdout)["failed"] == 0


# -- 4. containers ------------------------------------------------------------------------


def start_run(args: list[str], log_path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen(GREENQ + ["run", *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=clean_env())


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_run_waits_for_a_redis_that_starts_later_then_runs_jobs(namespace, tmp_path):
    from redis_server import RedisServer, free_port

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log_path = tmp_path / "run.log"
    worker = start_run([os.path.join(TASKS, "proc_sleep.py"), "--redis-url", url,
                        "--namespace", namespace, "--wait-for-redis", "30"], log_path)
    server = RedisServer(port=port)
    try:
        time.sleep(2)
        assert worker.poll() is None, log_path.read_text()
        server.start()
        from greenq import GreenQueue

        GreenQueue(redis_url=url, namespace=namespace).submit_job(
            "proc.sleep", params={"url": url, "key": namespace + ":rec"})
        client = server.client()
        wait_until(lambda: client.llen(namespace + ":rec:done") == 1 or worker.poll() is not None,
                   timeout=30)
        assert worker.poll() is None, log_path.read_text()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        stop(worker)
        server.close()
    output = log_path.read_text()
    tries = [line for line in output.splitlines() if "not reachable yet" in line]
    assert 2 <= len(tries) <= 12, output  # one line per try, with back-off: not one per 0.1 s
    assert f"127.0.0.1:{port}/0" in tries[0]
    assert "Traceback" not in output


def test_run_gives_up_waiting_for_redis_after_the_time_given_with_one_line_and_status_1(
        tmp_path):
    started = time.monotonic()
    result = greenq("run", os.path.join(TASKS, "proc_outcome.py"), "--redis-url",
                    "redis://127.0.0.1:1/0", "--wait-for-redis", "1.5")
    took = time.monotonic() - started

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("greenq: cannot reach Redis at 127.0.0.1:1/0")
    assert all("not reachable yet" in line for line in lines[:-1]) and len(lines) >= 3
    assert 1.5 <= took < 15


@pytest.mark.parametrize("children", ["0", "1"], ids=["in-process", "-c 1"])
def test_sigterm_with_a_graceful_timeout_gives_running_jobs_back_and_exits_0(
        common, make_queue, r, redis_url, namespace, tmp_path, children):
    key = namespace + ":rec"
    job_id = make_queue().submit_job("proc.sleep", resource_id="res-A",
                                     params={"url": redis_url, "key": key, "first": 60})
    log_path = tmp_path / "run.log"
    worker = start_run([os.path.join(TASKS, "proc_sleep.py"), "-c", children,
                        "--graceful-timeout", "1", *common], log_path)
    try:
        wait_until(lambda: r.llen(key + ":started") == 1 or worker.poll() is not None, timeout=30)
        assert worker.poll() is None, log_path.read_text()
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        status = worker.wait(30)
        took = time.monotonic() - signalled
    finally:
        stop(worker)

    assert status == 0, log_path.read_text()
    assert 1 <= took < 10
    prefix = prefix_of(namespace)
    assert r.lrange(prefix + "pending", 0, -1) == [job_id.encode()]
    assert r.hget(prefix + "counts", "active") == b"0"
    assert r.hget(prefix + "locks", "res-A") == job_id.encode()  # still its resource's turn
    assert r.llen(key + ":done") == 0 and r.llen(prefix + "failed") == 0


SILENT_SERVER = """
import socket, time
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
conns = []
while True:
    conn, _ = server.accept()
    conns.append(conn)  # accepted, never answered
    print("accepted", flush=True)
"""


def test_ctrl_c_during_a_submit_to_a_server_that_never_answers_exits_130_quietly():
    server = subprocess.Popen([sys.executable, "-u", "-c", SILENT_SERVER], stdout=subprocess.PIPE,
                              text=True)
    try:
        port = int(server.stdout.readline())
        submit = subprocess.Popen(GREENQ + ["submit", "proc.outcome", "--redis-url",
                                            f"redis://127.0.0.1:{port}/0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL, env=clean_env())
        try:
            assert server.stdout.readline().strip() == "accepted"
            time.sleep(0.3)  # into its wait for the reply
            submit.send_signal(signal.SIGINT)
            out, err = submit.communicate(timeout=10)
        finally:
            stop(submit)
    finally:
        stop(server)

    assert submit.returncode == 130, err
    assert out == ""
    assert "Aborted!" not in err and "Traceback" not in err


@pytest.mark.parametrize("signum, expected", [(signal.SIGINT, 130), (signal.SIGTERM, 0)],
                         ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_while_run_waits_for_redis_exits_130_quietly_and_sigterm_0(
        tmp_path, signum, expected):
    log_path = tmp_path / "run.log"
    worker = start_run([os.path.join(TASKS, "proc_outcome.py"), "--redis-url",
                        "redis://127.0.0.1:1/0", "--wait-for-redis", "60"], log_path)
    try:
        wait_until(lambda: "not reachable yet" in log_path.read_text() or worker.poll() is not None,
                   timeout=30)
        worker.send_signal(signum)
        status = worker.wait(10)
    finally:
        stop(worker)

    output = log_path.read_text()
    assert status == expected, output
    assert f"{signum.name} while waiting for Redis: stopping" in output
    assert "Aborted!" not in output and "Traceback" not in output


# -- 12. small things -----------------------------------------------------------------------


def every_command():
    """(path, click command) of `greenq` and each of its sub-commands."""
    import click

    from greenq.cli import main

    found, todo = [], [((), main)]
    while todo:
        path, command = todo.pop()
        found.append((path, command))
        if isinstance(command, click.Group):
            todo.extend((path + (name,), sub) for name, sub in command.commands.items())
    return found


def test_every_option_of_every_command_has_a_help_text():
    import click

    missing = [" ".join(("greenq",) + path + (param.opts[-1],))
               for path, command in every_command() for param in command.params
               if isinstance(param, click.Option) and not (param.help or "").strip()]

    assert missing == []
    submit_help = greenq("submit", "--help").stdout
    assert "failed job is tried again" in " ".join(submit_help.split())  # --retries
    list_help = greenq("failed", "list", "--help").stdout
    assert "Failed jobs listed at most" in " ".join(list_help.split())  # --limit


def test_log_level_choices_are_shown_in_one_case_and_any_case_is_taken():
    shown = " ".join(greenq("run", "--help").stdout.split())

    assert "--log-level [debug|info|warning|error]" in shown and "[default: info]" in shown
    for given in ("WARNING", "Warning", "debug"):
        result = greenq("run", os.path.join(TASKS, "proc_outcome.py"), "--log-level", given,
                        "--redis-url", "redis://127.0.0.1:1/0", "--wait-for-redis", "0")
        assert result.returncode == 1, result.stderr  # past the options: Redis is not there
        assert "cannot reach Redis" in result.stderr


def test_inspect_lists_running_jobs_oldest_first(common, make_queue, r, redis_url, namespace):
    key = namespace + ":rec"
    queue = make_queue("proc_sleep", worker_count=5)
    queue.start()
    ids = []
    for n in range(5):
        ids.append(queue.submit_job("proc.sleep", resource_id=f"res-{n}",
                                    params={"url": redis_url, "key": key, "n": n, "first": 60}))
        wait_until(lambda: r.llen(key + ":started") == n + 1, timeout=20)
        time.sleep(0.05)  # distinct start times, in submission order

    try:
        text = greenq("inspect", *common)
        as_json = greenq("inspect", "--json", *common)
    finally:
        queue.shutdown(timeout=0)

    lines = text.stdout.splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith("running jobs")) + 1
    assert [line.split()[0] for line in lines[first:first + 5]] == ids
    running = json.loads(as_json.stdout)["running"]
    assert [job["id"] for job in running] == ids
    assert running[0]["age"] > running[-1]["age"]


def test_a_params_key_that_is_an_int_is_refused_with_an_article_that_fits(make_queue):
    from greenq import ParamsError

    with pytest.raises(ParamsError, match="key 7 is an int; keys must be str"):
        make_queue().submit_job("proc.outcome", params={7: "x"})
    with pytest.raises(ParamsError, match="an object cannot be carried"):
        make_queue().submit_job("proc.outcome", params={"x": object()})


def test_the_demo_keeps_its_resources_busy_by_default_explains_its_latency_and_draws_one_final_bar(
        redis_url, r):
    result = greenq("demo", "--jobs", "200", "--resources", "10", "-c", "1",
                    "--redis-url", redis_url, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "200 jobs over 10 resources, 1 child x 10 workers" in result.stdout  # 10 resources / 1
    assert "waiting behind" in result.stdout and "submit-to-start" in result.stdout
    assert result.stderr.count("200/200") == 1, result.stderr
    assert r.keys("greenq-demo-*") == []


def test_the_demo_counts_one_of_each_in_the_singular(redis_url):
    result = greenq("demo", "--jobs", "1", "--resources", "1", "-c", "1", "--redis-url", redis_url,
                    timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 job over 1 resource, 1 child x 1 worker, in " in result.stdout
    assert "resource lock: checked on the 1 job, " in result.stdout
    assert "runs its ~1 one at a time" in result.stdout


def test_ctrl_c_during_the_demo_exits_130_quietly_and_leaves_no_keys(redis_url, r):
    # One resource: the demo idles in gevent's hub, where a Ctrl-C landed
    # in about half of the runs before the fix (and was printed there).
    demo = subprocess.Popen(GREENQ + ["demo", "--jobs", "100000", "--resources", "1", "-c", "1",
                                      "--redis-url", redis_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=clean_env())
    try:
        wait_until(lambda: r.keys("greenq-demo-*") or demo.poll() is not None, timeout=60)
        time.sleep(1)  # running
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        stop(demo)

    assert demo.returncode == 130, err
    assert "KeyboardInterrupt" not in err and "Aborted!" not in err and "Traceback" not in err
    assert "succeeded" not in out
    assert r.keys("greenq-demo-*") == []


SLOW_PROXY = """
import socket, sys, threading, time
target = int(sys.argv[1])
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)

def pipe(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass

while True:
    conn, _ = server.accept()
    print("accepted", flush=True)
    time.sleep(2)  # a Redis slow to answer its first command
    upstream = socket.create_connection(("127.0.0.1", target))
    threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()
"""


def test_ctrl_c_during_run_s_first_ping_stops_it_even_when_the_ping_then_works(
        redis_server, namespace, tmp_path):
    proxy = subprocess.Popen([sys.executable, "-u", "-c", SLOW_PROXY, str(redis_server.port)],
                             stdout=subprocess.PIPE, text=True)
    log_path = tmp_path / "run.log"
    try:
        port = int(proxy.stdout.readline())
        worker = start_run([os.path.join(TASKS, "proc_outcome.py"), "--namespace", namespace,
                            "--redis-url", f"redis://127.0.0.1:{port}/0"], log_path)
        try:
            assert proxy.stdout.readline().strip() == "accepted"
            time.sleep(0.5)  # its PING is on the way; the answer comes 1.5 s later
            worker.send_signal(signal.SIGINT)
            status = worker.wait(30)
        finally:
            stop(worker)
    finally:
        stop(proxy)

    output = log_path.read_text()
    assert status == 130, output
    assert "SIGINT while waiting for Redis: stopping" in output
    assert "greenq running" not in output
