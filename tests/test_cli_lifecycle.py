"""The `greenq` commands of the job life cycle (issue 13): `job`, `cancel`,
`wait`, `submit --job-id/--coalesce/--wait`, and the failed queue's
`--id`/`--task` filters. Real `greenq` subprocesses against the private
redis-server, jobs run by a real `greenq run` worker, as in
tests/test_cli.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import TASKS, wait_until
from test_cli import GREENQ, clean_env, greenq, one_line_error, prefix_of

LIFECYCLE = os.path.join(TASKS, "lifecycle.py")
FILTERS = os.path.join(TASKS, "filters.py")


@pytest.fixture
def common(redis_url, namespace) -> list[str]:
    return ["--redis-url", redis_url, "--namespace", namespace]


@pytest.fixture
def worker(common, tmp_path, make_queue):
    """worker() starts `greenq run` of tests/tasks/lifecycle.py and
    filters.py (one job at a time unless told) and returns once it is live;
    stopped with SIGTERM at teardown."""
    started = []

    def start(workers: int = 1) -> subprocess.Popen:
        log_path = tmp_path / f"run{len(started)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(GREENQ + ["run", LIFECYCLE, FILTERS, "-w", str(workers),
                                                 *common],
                                       stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=clean_env())
        started.append((process, log_path))
        queue = make_queue()
        wait_until(lambda: queue.stats()["workers"] >= 1 or process.poll() is not None,
                   timeout=30)
        assert process.poll() is None, log_path.read_text()
        return process

    yield start
    for process, log_path in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                assert process.wait(30) == 0, log_path.read_text()
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(10)
        # Jobs' own failures are logged at WARNING; an ERROR is greenq's trouble.
        assert " ERROR " not in log_path.read_text(), log_path.read_text()


def submit(common, *args: str) -> str:
    result = greenq("submit", *args, *common)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def job_json(common, job_id: str) -> dict:
    result = greenq("job", job_id, "--json", *common)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def state_of(common, job_id: str) -> str:
    return job_json(common, job_id)["state"]


def keys_of(r, namespace) -> list[bytes]:
    return r.keys(namespace + ":*")


JOB_KEYS = {"id", "task_id", "resource_id", "state", "params", "result", "retries", "attempts",
            "error", "fencing_token"}


# -- greenq job ----------------------------------------------------------------------


def test_job_shows_a_succeeded_job_with_its_state_attempts_and_result(common, worker):
    worker()
    job_id = submit(common, "life.ok", "--resource", "res-1", "--params", '{"n": 7}')
    wait_until(lambda: state_of(common, job_id) == "succeeded", timeout=20)

    text = greenq("job", job_id, *common)
    as_json = greenq("job", job_id, "--json", *common)

    assert text.returncode == 0 and text.stderr == ""
    lines = dict(line.split(None, 1) if not line.startswith("retries left") else
                 ("retries left", line[len("retries left"):].strip())
                 for line in text.stdout.splitlines())
    assert lines == {"id": job_id, "task": "life.ok", "resource": "res-1", "state": "succeeded",
                     "attempts": "1", "retries left": "0", "params": '{"n": 7}',
                     "result": '{"got": {"n": 7}}', "error": "-"}
    assert as_json.returncode == 0 and as_json.stderr == ""
    record = json.loads(as_json.stdout)
    assert set(record) == JOB_KEYS
    assert (record["id"], record["state"], record["result"], record["params"],
            record["resource_id"], record["attempts"]) == \
        (job_id, "succeeded", {"got": {"n": 7}}, {"n": 7}, "res-1", 1)
    assert record["fencing_token"] > 0


def test_job_shows_a_failed_jobs_whole_traceback_indented_under_error(common, worker):
    worker()
    job_id = submit(common, "life.fail", "--params", '"x"')
    wait_until(lambda: state_of(common, job_id) == "failed", timeout=20)

    result = greenq("job", job_id, *common)

    assert result.returncode == 0
    lines = result.stdout.splitlines()
    error_at = lines.index("error")
    assert lines[error_at + 1] == "    Traceback (most recent call last):"
    assert lines[-1] == "    ValueError: asked to fail: x"
    assert "resource     -" in lines and "state        failed" in lines


def test_job_of_an_unknown_id_is_one_line_on_stderr_and_exit_1(common, make_queue, r, namespace):
    make_queue().submit_job("life.ok")  # a queue in use: no "never used" note
    before = sorted(keys_of(r, namespace))

    result = greenq("job", "no-such-job", *common)
    as_json = greenq("job", "no-such-job", "--json", *common)

    for outcome in (result, as_json):
        assert outcome.returncode == 1
        assert outcome.stdout == ""
        assert "no job 'no-such-job' (unknown id" in one_line_error(outcome)
    assert sorted(keys_of(r, namespace)) == before


def test_job_with_an_empty_id_is_exit_2_and_a_key_that_is_no_job_record_exit_1(
        common, make_queue, r, namespace):
    make_queue().submit_job("life.ok")
    r.set(prefix_of(namespace) + "job:not-a-hash", "x")

    empty = greenq("job", "", *common)
    not_a_record = greenq("job", "not-a-hash", *common)

    assert empty.returncode == 2 and "job_id must not be empty" in one_line_error(empty)
    assert not_a_record.returncode == 1
    assert "job not-a-hash: its key holds no job record" in one_line_error(not_a_record)


def test_job_json_shows_bytes_params_as_python_writes_them(common, make_queue):
    job_id = make_queue().submit_job("life.ok", params={"blob": b"\x00\xff"})

    result = greenq("job", job_id, "--json", *common)
    text = greenq("job", job_id, *common)

    assert result.returncode == 0
    record = json.loads(result.stdout)
    assert record["params"] == {"blob": "b'\\x00\\xff'"} and record["state"] == "pending"
    assert 'params       {"blob": "b\'\\\\x00\\\\xff\'"}' in text.stdout.splitlines()


# -- greenq cancel -------------------------------------------------------------------


def test_cancel_of_a_job_not_started_says_cancelled_and_it_never_runs(common, worker):
    job_id = submit(common, "life.ok", "--resource", "res-1")
    behind = submit(common, "life.ok", "--resource", "res-1")

    result = greenq("cancel", job_id, *common)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{job_id} cancelled\n" and result.stderr == ""
    assert state_of(common, job_id) == "cancelled"
    worker()
    wait_until(lambda: state_of(common, behind) == "succeeded", timeout=20)
    assert job_json(common, job_id)["attempts"] == 0


def test_cancel_of_a_running_job_stops_it_and_it_ends_cancelled(common, worker):
    worker()
    job_id = submit(common, "life.sleep", "--params", '{"seconds": 60}', "--retries", "3")
    wait_until(lambda: state_of(common, job_id) == "active", timeout=20)

    started = time.monotonic()
    result = greenq("cancel", job_id, *common)
    waited = greenq("wait", job_id, "--timeout", "10", "--json", *common)

    assert result.returncode == 0 and result.stdout == f"{job_id} cancelled\n"
    assert waited.returncode == 1, waited.stderr
    record = json.loads(waited.stdout)
    assert record["state"] == "cancelled" and record["attempts"] == 1
    assert time.monotonic() - started < 10


def test_cancel_of_several_ids_says_per_id_and_exits_1_unless_every_one_was_cancelled(
        common, worker):
    worker()
    done = submit(common, "life.ok")
    wait_until(lambda: state_of(common, done) == "succeeded", timeout=20)
    queued = [submit(common, "life.sleep", "--resource", "busy") for _ in range(2)]

    result = greenq("cancel", queued[1], done, "no-such-job", *common)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{queued[1]} cancelled",
        f"{done} not cancelled (already ended or unknown)",
        "no-such-job not cancelled (already ended or unknown)"]
    assert state_of(common, done) == "succeeded"
    assert state_of(common, queued[1]) == "cancelled"
    all_cancelled = greenq("cancel", queued[0], *common)
    assert all_cancelled.returncode == 0 and all_cancelled.stdout == f"{queued[0]} cancelled\n"


def test_cancel_with_an_empty_id_cancels_none_of_them_and_exits_2(common, make_queue, r,
                                                                   namespace):
    job_id = make_queue().submit_job("life.ok")

    result = greenq("cancel", job_id, "", *common)
    missing = greenq("cancel", *common)

    assert result.returncode == 2 and result.stdout == ""
    assert "JOB_ID 2 must not be empty" in one_line_error(result)
    assert r.hget(prefix_of(namespace) + f"job:{job_id}", "state") == b"pending"
    assert missing.returncode == 2 and "Missing argument" in missing.stderr


# -- greenq wait -----------------------------------------------------------------------


def test_wait_shows_the_succeeded_job_and_exits_0(common, worker):
    job_id = submit(common, "life.ok", "--params", '[1, "a"]')
    worker()

    text = greenq("wait", job_id, "--timeout", "20", *common)
    as_json = greenq("wait", job_id, "--json", *common)

    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[:4] == [f"id           {job_id}", "task         life.ok",
                                            "resource     -", "state        succeeded"]
    assert "result       {\"got\": [1, \"a\"]}" in text.stdout.splitlines()
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["result"] == {"got": [1, "a"]}


def test_wait_for_a_job_that_fails_after_its_retries_exits_1_with_its_error(common, worker):
    worker()
    job_id = submit(common, "life.fail", "--retries", "1")

    result = greenq("wait", job_id, "--json", *common)

    assert result.returncode == 1, result.stderr
    record = json.loads(result.stdout)
    assert record["state"] == "failed" and record["attempts"] == 2 and record["retries"] == 0
    assert "ValueError: asked to fail" in record["error"]


def test_wait_for_an_unknown_id_exits_1_at_once(common, make_queue):
    make_queue().submit_job("life.ok")

    started = time.monotonic()
    result = greenq("wait", "no-such-job", *common)

    assert result.returncode == 1 and result.stdout == ""
    assert "no job 'no-such-job'" in one_line_error(result)
    assert time.monotonic() - started < 10


def test_wait_that_times_out_exits_124_and_says_where_the_job_is(common, make_queue, r,
                                                                  namespace):
    job_id = make_queue().submit_job("life.ok")

    started = time.monotonic()
    result = greenq("wait", job_id, "--timeout", "1", *common)
    took = time.monotonic() - started

    assert result.returncode == 124
    assert result.stdout == ""
    line = one_line_error(result)
    assert f"job '{job_id}' has not ended within 1 s (it is pending)" in line
    assert 1 <= took < 10
    assert r.hget(prefix_of(namespace) + f"job:{job_id}", "state") == b"pending"


def test_wait_with_a_negative_timeout_is_a_usage_error(common, make_queue):
    job_id = make_queue().submit_job("life.ok")

    result = greenq("wait", job_id, "--timeout", "-1", *common)

    assert result.returncode == 2 and "--timeout" in result.stderr


# -- greenq submit --job-id / --coalesce / --wait ----------------------------------------


def test_submit_with_the_same_job_id_twice_prints_it_twice_and_queues_one_job(
        common, r, namespace):
    first = greenq("submit", "life.ok", "--job-id", "order-42", "--params", "1", *common)
    second = greenq("submit", "life.ok", "--job-id", "order-42", "--params", "2", *common)

    assert (first.returncode, second.returncode) == (0, 0)
    assert first.stdout == second.stdout == "order-42\n"
    assert r.lrange(prefix_of(namespace) + "pending", 0, -1) == [b"order-42"]
    assert job_json(common, "order-42")["params"] == 1


def test_submit_coalesce_replaces_the_params_of_the_resources_job_not_started_yet(
        common, r, namespace, worker):
    first = submit(common, "life.ok", "--resource", "res-1", "--params", '{"v": 1}', "--coalesce")
    second = submit(common, "life.ok", "--resource", "res-1", "--params", '{"v": 2}', "--coalesce",
                    "--retries", "2")
    other_task = submit(common, "life.fail", "--resource", "res-1", "--coalesce")

    assert second == first and other_task != first
    record = job_json(common, first)
    assert (record["params"], record["retries"]) == ({"v": 2}, 2)
    worker()
    waited = greenq("wait", first, "--json", *common)
    assert waited.returncode == 0 and json.loads(waited.stdout)["result"] == {"got": {"v": 2}}


def test_submit_coalesce_without_a_resource_is_exit_2_and_writes_nothing(common, r, namespace):
    result = greenq("submit", "life.ok", "--coalesce", *common)

    assert result.returncode == 2 and result.stdout == ""
    assert "--coalesce needs --resource" in one_line_error(result)
    assert keys_of(r, namespace) == []


@pytest.mark.parametrize("args, message", [
    (["--timeout", "5"], "--timeout goes with --wait"),
    (["--json"], "--json goes with --wait"),
    (["--job-id", ""], "job_id must not be empty"),
], ids=["timeout", "json", "empty-job-id"])
def test_submit_options_that_do_not_fit_are_exit_2_and_write_nothing(common, r, namespace,
                                                                     args, message):
    result = greenq("submit", "life.ok", *args, *common)

    assert result.returncode == 2 and result.stdout == ""
    assert message in one_line_error(result)
    assert keys_of(r, namespace) == []


def test_submit_wait_shows_the_ended_job_and_exits_like_wait(common, worker):
    worker()

    succeeded = greenq("submit", "life.ok", "--params", '"hi"', "--wait", "--timeout", "20",
                       *common)
    failed = greenq("submit", "life.fail", "--wait", "--json", *common)

    assert succeeded.returncode == 0, succeeded.stderr
    lines = succeeded.stdout.splitlines()
    assert lines[0].startswith("id ") and "state        succeeded" in lines
    assert 'result       {"got": "hi"}' in lines
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["state"] == "failed"


def test_submit_wait_that_times_out_exits_124_naming_the_job_which_stays_queued(
        common, r, namespace):
    result = greenq("submit", "life.ok", "--wait", "--timeout", "0.5", *common)

    assert result.returncode == 124 and result.stdout == ""
    [job_id] = [x.decode() for x in r.lrange(prefix_of(namespace) + "pending", 0, -1)]
    assert f"job '{job_id}' has not ended within 0.5 s (it is pending)" in one_line_error(result)


def test_ctrl_c_during_submit_wait_exits_130_and_names_the_job_still_queued(common, r,
                                                                            namespace):
    process = subprocess.Popen(GREENQ + ["submit", "life.ok", "--wait", *common],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL, env=clean_env())
    try:
        pending = prefix_of(namespace) + "pending"
        wait_until(lambda: r.llen(pending) == 1 or process.poll() is not None, timeout=20)
        time.sleep(0.5)  # into its wait
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    assert process.returncode == 130, err
    job_id = r.lrange(pending, 0, -1)[0].decode()
    assert out == ""
    assert f"greenq: job {job_id} stays queued; `greenq wait {job_id}` waits again" in err
    assert "Traceback" not in err and "Aborted!" not in err


# -- greenq failed --id / --task ---------------------------------------------------------


def fail_through_the_worker(common, r, namespace, tasks: list[str]) -> list[str]:
    """Submit one failing job per task id through `greenq submit`, let the
    running worker fail them (one at a time: in order); their ids."""
    ids = [submit(common, task, "--params", f'{{"fail": "job {n}"}}')
           for n, task in enumerate(tasks)]
    failed = prefix_of(namespace) + "failed"
    wait_until(lambda: r.llen(failed) == len(ids), timeout=30)
    assert [x.decode() for x in r.lrange(failed, 0, -1)] == ids
    return ids


def failed_ids(r, namespace) -> list[str]:
    return [x.decode() for x in r.lrange(prefix_of(namespace) + "failed", 0, -1)]


def test_failed_list_with_task_lists_only_that_tasks_jobs(common, worker, r, namespace):
    worker()
    ids = fail_through_the_worker(common, r, namespace,
                                  ["filters.a", "filters.b", "filters.a", "filters.b"])

    text = greenq("failed", "list", "--task", "filters.b", *common)
    as_json = greenq("failed", "list", "--task", "filters.a", "--limit", "1", "--json", *common)
    none = greenq("failed", "list", "--task", "no.such.task", *common)

    assert text.returncode == 0
    assert [line.split()[0] for line in text.stdout.splitlines()] == [ids[1], ids[3]]
    assert [json.loads(line)["id"] for line in as_json.stdout.splitlines()] == [ids[0]]
    assert none.stdout == "no failed jobs of task 'no.such.task'\n"


def test_failed_retry_by_id_retries_those_and_notes_the_ids_that_were_not_failed(
        common, worker, r, namespace):
    process = worker()
    ids = fail_through_the_worker(common, r, namespace, ["filters.a"] * 3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0

    result = greenq("failed", "retry", "--id", ids[2], "--id", "no-such-job", "--id", ids[0],
                    *common)

    assert result.returncode == 0
    assert result.stdout == "2 jobs retried\n"
    assert result.stderr == "greenq: note: 1 of the 3 ids given was not in the failed queue\n"
    assert failed_ids(r, namespace) == [ids[1]]
    assert state_of(common, ids[2]) == state_of(common, ids[0]) == "pending"


def test_failed_retry_by_task_retries_that_tasks_jobs_which_run_again(common, worker, r,
                                                                      namespace):
    worker()
    ids = fail_through_the_worker(common, r, namespace, ["filters.a", "filters.b", "filters.a"])

    result = greenq("failed", "retry", "--task", "filters.a", *common)

    assert result.returncode == 0 and result.stdout == "2 jobs retried\n"
    assert result.stderr == ""
    # They run again on the worker, fail again, and come back at the end.
    wait_until(lambda: failed_ids(r, namespace) == [ids[1], ids[0], ids[2]], timeout=20)
    assert job_json(common, ids[0])["attempts"] == 2
    assert job_json(common, ids[1])["attempts"] == 1


def test_failed_delete_by_id_needs_no_yes_and_by_task_does(common, worker, r, namespace):
    worker()
    ids = fail_through_the_worker(common, r, namespace,
                                  ["filters.a", "filters.b", "filters.a", "filters.b"])

    by_id = greenq("failed", "delete", "--id", ids[1], "--id", ids[2], "--task", "filters.a",
                   *common)
    refused = greenq("failed", "delete", "--task", "filters.b", *common)

    assert by_id.returncode == 0 and by_id.stdout == "1 job deleted\n"
    assert by_id.stderr == ("greenq: note: 1 of the 2 ids given was not in the failed queue "
                            "with task 'filters.a'\n")
    assert failed_ids(r, namespace) == [ids[0], ids[1], ids[3]]
    assert refused.returncode == 2 and refused.stdout == ""
    assert "deletes every failed job of task 'filters.b' and no terminal" in \
        one_line_error(refused)
    assert failed_ids(r, namespace) == [ids[0], ids[1], ids[3]]

    by_task = greenq("failed", "delete", "--task", "filters.b", "--yes", *common)

    assert by_task.returncode == 0 and by_task.stdout == "2 jobs deleted\n"
    assert failed_ids(r, namespace) == [ids[0]]
    assert greenq("job", ids[1], *common).returncode == 1


@pytest.mark.parametrize("command, args, message", [
    (["retry"], ["--id", ""], "--id must not be empty"),
    (["retry"], ["--task", ""], "--task must not be empty"),
    (["delete"], ["--id", "x", "--id", ""], "--id must not be empty"),
    (["delete", "--yes"], ["--task", ""], "--task must not be empty"),
    (["list"], ["--task", ""], "--task must not be empty"),
], ids=["retry-id", "retry-task", "delete-id", "delete-task", "list-task"])
def test_an_empty_id_or_task_is_exit_2_and_changes_nothing(common, make_queue, r, namespace,
                                                           command, args, message):
    make_queue().submit_job("life.ok")
    before = {key: r.dump(key) for key in keys_of(r, namespace)}

    result = greenq("failed", *command, *args, *common)

    assert result.returncode == 2 and result.stdout == ""
    assert message in one_line_error(result)
    assert {key: r.dump(key) for key in keys_of(r, namespace)} == before


# -- help ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["job"], ["cancel"], ["wait"]])
def test_the_help_of_the_life_cycle_commands_exits_0(command):
    result = greenq(*command, "--help")

    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: ") and "--redis-url" in result.stdout


def test_the_help_of_submit_and_failed_lists_the_new_options():
    submit_help = greenq("submit", "--help").stdout
    for option in ("--job-id", "--coalesce", "--wait", "--timeout", "--json"):
        assert option in submit_help
    for command in ("retry", "delete"):
        text = greenq("failed", command, "--help").stdout
        assert "--id JOB_ID" in text and "--task TASK_ID" in text
    assert "--task TASK_ID" in greenq("failed", "list", "--help").stdout
