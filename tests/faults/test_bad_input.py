"""Bad input, where tests/test_input.py, tests/test_core.py and
tests/test_failures.py leave off: truncated and malformed records written
straight into Redis, params that cannot be decoded or exceed the decode
cap, a corrupted job holding a resource, unknown tasks on a busy resource,
clear submit errors, id charsets, BaseExceptions in a real worker process
and tasks that leave greenlets behind.

Jobs that run append to an O_APPEND file (tests/tasks/fault_scale_*.py),
so a job that ran twice, or ran when it should not have, shows."""

from __future__ import annotations

import datetime
import math
import os
import signal
import subprocess
import sys
import time
import types

import gevent
import msgpack
import pytest

import greenq
from conftest import TASKS, wait_until
from queue_state import unfinished

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOG_MODULE = "greenq_tasks_fault_scale_log"  # how make_queue("fault_scale_log") loads it


@pytest.fixture
def runs_log(tmp_path):
    """A fresh side-effect file; `lines()` reads it. `bind()` makes the
    in-process fault.scale.log task write there whatever its params say,
    for records planted by hand."""

    class RunsLog:
        path = str(tmp_path / "runs.log")

        def lines(self) -> list[str]:
            if not os.path.exists(self.path):
                return []
            with open(self.path) as f:
                return f.read().splitlines()

        def bind(self) -> None:
            sys.modules[LOG_MODULE].log_path = self.path

    yield RunsLog()
    if LOG_MODULE in sys.modules:
        sys.modules[LOG_MODULE].log_path = None


class Events:
    def __init__(self, queue) -> None:
        self.seen = {name: [] for name in ("job_success", "job_fail", "job_retry", "error")}
        for name, items in self.seen.items():
            queue.on(name, items.append)

    def __getitem__(self, name: str) -> list:
        return self.seen[name]


def plant(r, keys, job_id: str, **fields) -> None:
    """Write a job record by hand and make it the next job fetched.
    A field given as None is left out of the record."""
    record = {"task": "fault.scale.log", "enc": "m", "retries": 2, "attempts": 0, "state": "pending"}
    record.update(fields)
    r.hset(keys.job(job_id), mapping={k: v for k, v in record.items() if v is not None})
    r.lpush(keys.pending, job_id)


def log_params(runs_log, key: str, seq: int = 0, **extra) -> dict:
    return {"k": key, "s": seq, "log": runs_log.path, **extra}


def assert_queue_settled(r, keys, failed_ids: list[str]) -> None:
    assert [x.decode() for x in r.lrange(keys.failed, 0, -1)] == failed_ids
    assert r.llen(keys.pending) == 0
    assert r.hlen(keys.locks) == 0
    assert int(r.hget(keys.counts, "active") or 0) == 0
    assert int(r.hget(keys.counts, "waiting") or 0) == 0


# -- records written straight into Redis ------------------------------------------

def _deeply_nested_msgpack(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


GARBAGE = {
    # case: (fields of the record, what the failed job's error must say)
    "truncated msgpack": (
        {"params": msgpack.packb({"k": "bad", "s": 0, "pad": "x" * 40})[:-9]}, "incomplete"),
    "msgpack with trailing bytes": ({"params": msgpack.packb({"k": "bad", "s": 0}) + b"\x00junk"}, "ExtraData"),
    "msgpack declaring a 4 GB string": ({"params": b"\xdb\xff\xff\xff\xff"}, "decoded"),
    "msgpack nested 100,000 deep": ({"params": _deeply_nested_msgpack(100_000)}, "decoded"),
    "msgpack int map key": ({"params": msgpack.packb({1: "bad"})}, "map key"),
    "msgpack ext type": ({"params": msgpack.packb(msgpack.ExtType(7, b"payload"))}, "ext type"),
    "msgpack timestamp ext type": (
        {"params": msgpack.packb({"k": "bad", "s": 0, "at": msgpack.Timestamp(1_700_000_000, 0)})},
        "JobDecodeError"),
    "json that is not json": ({"enc": "j", "params": b"{k: bad"}, "decoded"),
    "truncated json": ({"enc": "j", "params": b'{"k": "bad", "s": [1, 2'}, "decoded"),
    "json with invalid utf-8": ({"enc": "j", "params": b'{"k": "\xff\xfe"}'}, "decoded"),
    "json with NaN": ({"enc": "j", "params": b'{"k": "bad", "s": 0, "x": NaN}'}, "JobDecodeError"),
    "an unknown encoding tag": ({"enc": "x", "params": msgpack.packb({"k": "bad", "s": 0})}, "encoding 'x'"),
    "no encoding field": ({"enc": None, "params": msgpack.packb({"k": "bad", "s": 0})}, "encoding None"),
    "msgpack params under the json tag": ({"enc": "j", "params": msgpack.packb({"k": "bad", "s": 0})},
                                          "decoded"),
    "no task field": ({"task": None, "params": msgpack.packb({"k": "bad", "s": 0})}, "UnknownTaskError"),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_a_malformed_record_fails_for_good_with_the_reason_and_the_next_good_job_runs(
        make_queue, r, runs_log, case):
    fields, reason = GARBAGE[case]
    queue = make_queue("fault_scale_log", worker_count=2)
    runs_log.bind()  # should a malformed job run after all, its run shows in the log
    events = Events(queue)
    plant(r, queue.keys, "garbage", **fields)
    good = queue.submit_job("fault.scale.log", resource_id="good", params=log_params(runs_log, "good"))
    queue.start()
    ended = lambda: {job.id for name in ("job_success", "job_fail") for job in events[name]}  # noqa: E731
    wait_until(lambda: ended() == {good, "garbage"}, timeout=15)

    assert runs_log.lines() == ["S good 0", "E good 0"]  # the malformed job never ran
    assert [job.id for job in events["job_fail"]] == ["garbage"]
    (failed,) = queue.failed_jobs()
    assert failed.id == "garbage" and reason in failed.error, failed.error
    assert failed.retries == 2                            # another run would fail the same way
    assert len(events["error"]) == 1
    assert isinstance(events["error"][0], (greenq.JobDecodeError, greenq.UnknownTaskError))
    assert r.hget(queue.keys.job("garbage"), "state") == b"failed"
    assert not unfinished(r, queue.keys.job(good))
    assert_queue_settled(r, queue.keys, ["garbage"])

    # The worker goes on.
    again = queue.submit_job("fault.scale.log", params=log_params(runs_log, "again"))
    wait_until(lambda: again in [job.id for job in events["job_success"]], timeout=15)
    assert runs_log.lines()[-2:] == ["S again 0", "E again 0"]


def test_a_record_with_non_numeric_counters_still_runs_once(make_queue, r, runs_log):
    queue = make_queue("fault_scale_log")
    events = Events(queue)
    plant(r, queue.keys, "odd", retries="many", attempts="none", lease="zz",
          params=msgpack.packb(log_params(runs_log, "odd")))
    queue.start()
    wait_until(lambda: [job.id for job in events["job_success"]] == ["odd"], timeout=15)
    assert runs_log.lines() == ["S odd 0", "E odd 0"]
    assert events["error"] == [] and events["job_fail"] == []
    assert not unfinished(r, queue.keys.job("odd"))
    assert_queue_settled(r, queue.keys, [])


def test_a_corrupted_job_holding_a_resource_fails_and_hands_the_resource_to_the_next_job(
        make_queue, r, runs_log):
    submitter = make_queue()
    ids = submitter.submit_jobs([{"task_id": "fault.scale.log", "resource_id": "shared",
                                  "params": log_params(runs_log, "shared", n)} for n in range(3)])
    # The holder's params get corrupted at rest.
    blob = r.hget(submitter.keys.job(ids[0]), "params")
    r.hset(submitter.keys.job(ids[0]), "params", blob[: len(blob) // 2])
    assert r.lrange(submitter.keys.wait("shared"), 0, -1) == [ids[1].encode(), ids[2].encode()]

    queue = make_queue("fault_scale_log")
    events = Events(queue)
    queue.start()
    wait_until(lambda: len(events["job_success"]) == 2, timeout=15)
    assert [job.id for job in events["job_success"]] == ids[1:]
    assert runs_log.lines() == ["S shared 1", "E shared 1", "S shared 2", "E shared 2"]
    (failed,) = queue.failed_jobs()
    assert failed.id == ids[0] and "JobDecodeError" in failed.error
    assert not r.exists(submitter.keys.wait("shared"))
    assert_queue_settled(r, queue.keys, [ids[0]])


def test_params_over_the_workers_cap_fail_at_decode_and_the_worker_goes_on(make_queue, r, runs_log):
    # A submitter with the default 1 MiB cap writes params a worker capped at
    # 1,000 bytes must refuse to decode.
    submitter = make_queue()
    big = submitter.submit_job("fault.scale.log", resource_id="big",
                               params=log_params(runs_log, "big", pad="p" * 5000), retries=3)
    small = submitter.submit_job("fault.scale.log", resource_id="big", params=log_params(runs_log, "small"))
    assert len(r.hget(submitter.keys.job(big), "params")) > 5000

    worker = make_queue("fault_scale_log", max_params_bytes=1000)
    events = Events(worker)
    worker.start()
    wait_until(lambda: [job.id for job in events["job_success"]] == [small], timeout=15)
    assert runs_log.lines() == ["S small 0", "E small 0"]
    assert [job.id for job in events["job_fail"]] == [big]
    assert isinstance(events["error"][0], greenq.JobDecodeError)
    error = r.hget(worker.keys.job(big), "error").decode()
    assert "1000-byte cap" in error and "JobDecodeError" in error
    assert_queue_settled(r, worker.keys, [big])


def test_jobs_of_an_unknown_task_queued_on_one_resource_all_fail_and_free_it_for_a_known_one(
        make_queue, r, runs_log):
    queue = make_queue("fault_scale_log", unknown_task_grace=0)  # no grace: each fails at once
    events = Events(queue)
    unknown = queue.submit_jobs([{"task_id": "no.such.task", "resource_id": "u", "params": {"n": n},
                                  "retries": 5} for n in range(3)])
    known = queue.submit_job("fault.scale.log", resource_id="u", params=log_params(runs_log, "known"))
    queue.start()
    wait_until(lambda: [job.id for job in events["job_success"]] == [known], timeout=15)
    assert [job.id for job in events["job_fail"]] == unknown        # in order, each once, no retries
    assert events["job_retry"] == []
    assert [type(e) for e in events["error"]] == [greenq.UnknownTaskError] * 3
    assert all("no.such.task" in str(e) and "fault.scale.log" in str(e) for e in events["error"])
    assert runs_log.lines() == ["S known 0", "E known 0"]
    assert_queue_settled(r, queue.keys, unknown)


# -- submit: clear errors, nothing written ------------------------------------------

def _nested_lists(depth: int) -> list:
    outer = inner = []
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return outer


SUBMIT_ERRORS = {
    # case: (params, pattern the ParamsError message must contain)
    "set deep inside": ({"a": [1, {"b": {1, 2}}]}, r"params\['a'\]\[1\]\['b'\]: a set cannot be carried"),
    "datetime": ({"when": datetime.datetime(2024, 5, 1)}, r"\['when'\]: a datetime"),
    "int key": ({"ok": 1, 7: "x"}, r"key 7 is an int; keys must be str"),
    "int over 64 bits": ([2**64], r"18446744073709551616 does not fit in 64 bits"),
    "int under -2**63": ({"n": -(2**63) - 1}, r"does not fit in 64 bits"),
    "nan": ({"x": [float("nan")]}, r"nan is not a finite number"),
    "lone surrogate": ({"name": "ab\udc80"}, r"\['name'\]: string is not valid Unicode"),
    "nested 10,000 deep": (_nested_lists(10_000), r"nested deeper than"),
}


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
@pytest.mark.parametrize("case", list(SUBMIT_ERRORS))
def test_a_refused_submit_says_what_cannot_be_carried_and_where(make_queue, r, namespace, serializer, case):
    params, pattern = SUBMIT_ERRORS[case]
    queue = make_queue(serializer=serializer)
    with pytest.raises(greenq.ParamsError, match=pattern):
        queue.submit_job("fault.scale.log", resource_id="r", params=params)
    assert list(r.scan_iter(match=namespace + ":*")) == []


def test_a_refused_bulk_submit_says_which_entry_is_bad(make_queue, r, namespace):
    queue = make_queue()
    jobs = [{"task_id": "fault.scale.log", "params": {"n": n}} for n in range(10)]
    jobs[7]["params"] = {"n": {7}}
    with pytest.raises(greenq.ParamsError, match=r"jobs\[7\]"):
        queue.submit_jobs(jobs)
    assert list(r.scan_iter(match=namespace + ":*")) == []


EDGE_VALUES = {
    "uint64 max": 2**64 - 1,
    "int64 min": -(2**63),
    "negative zero": -0.0,
    "largest float": 1.7976931348623157e308,
    "smallest subnormal": 5e-324,
    "astral character": "\U0010ffff\U0001f600",
    "empty key and nul": {"": "\x00"},
    "nested 90 deep": _nested_lists(90),
}


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
def test_values_at_the_edge_of_what_is_carried_come_back_exactly(make_queue, serializer):
    queue = make_queue(TASKS + "/core_echo.py", serializer=serializer)
    seen = sys.modules["greenq_tasks_core_echo"].seen
    seen.clear()
    events = Events(queue)
    queue.start()
    for value in EDGE_VALUES.values():
        queue.submit_job("core.echo", resource_id="edge", params={"v": value})
    wait_until(lambda: len(events["job_success"]) == len(EDGE_VALUES), timeout=15)
    assert events["job_fail"] == [] and events["error"] == []
    for (name, value), got in zip(EDGE_VALUES.items(), seen):
        assert got == {"v": value}, name
        if name == "negative zero":
            assert math.copysign(1.0, got["v"]) == -1.0


# -- ids --------------------------------------------------------------------------

ODD_RESOURCE_IDS = ["a:b", "{tag}", "}{", "*", "?[x]", "with space", "line\nbreak", "nul\x00byte",
                    "wait:x", "ünïcødé", "\U0001f600", "é" * 512, "42"]


def test_resource_ids_of_any_characters_lock_run_in_order_and_leave_no_key(make_queue, r, namespace, runs_log):
    queue = make_queue("fault_scale_log", worker_count=20)
    events = Events(queue)
    jobs = [{"task_id": "fault.scale.log", "resource_id": resource, "params": log_params(runs_log, f"r{i}", n)}
            for n in range(3) for i, resource in enumerate(ODD_RESOURCE_IDS)]
    jobs.append({"task_id": "fault.scale.log", "resource_id": 42, "params": log_params(runs_log, "int42", 0)})
    queue.submit_jobs(jobs)
    # 42 and "42" are one resource: the int's job waits behind the str's.
    assert r.llen(queue.keys.wait("42")) == 3
    assert r.hlen(queue.keys.locks) == len(ODD_RESOURCE_IDS)
    queue.start()
    wait_until(lambda: len(events["job_success"]) == len(jobs), timeout=30)
    lines = runs_log.lines()
    for i in range(len(ODD_RESOURCE_IDS)):
        assert [line for line in lines if line.split()[1] == f"r{i}"] == \
            [f"{kind} r{i} {n}" for n in range(3) for kind in "SE"]
    assert lines.index("S int42 0") > lines.index("E r12 2")
    assert_queue_settled(r, queue.keys, [])
    assert [k for k in r.scan_iter(match=namespace + ":*")
            if b":wait:" in k or (b":job:" in k and unfinished(r, k))] == []


def test_a_task_id_longer_than_submit_accepts_is_refused_at_registration(make_queue):
    module = types.ModuleType("fault_scale_long_id")
    module.id = "t" * 513
    module.perform = lambda params: None
    queue = make_queue()
    with pytest.raises(greenq.TaskDefinitionError):
        queue.register_task(module)
    module.id = "t" * 512  # the longest id submit accepts registers and runs
    queue.register_task(module)


# -- tasks ending in BaseExceptions, in a real worker process ---------------------

RAISERS = os.path.join(TASKS, "fault_scale_raisers.py")
BASE_EXCEPTIONS = ["system_exit", "keyboard_interrupt", "greenlet_exit", "gevent_timeout"]


def start_worker(redis_url: str, namespace: str, task_file: str, tmp_path) -> subprocess.Popen:
    """`greenq run TASK_FILE` as its own process (jobs in-process, -c 0)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GREENQ_REDIS_URL", "REDIS_URL")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    stderr = open(tmp_path / "worker.stderr", "w")
    return subprocess.Popen([sys.executable, "-m", "greenq", "run", task_file, "-c", "0", "-w", "4",
                             "--redis-url", redis_url, "--namespace", namespace, "--log-level", "INFO"],
                            env=env, stdout=subprocess.DEVNULL, stderr=stderr)


def stop_worker(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise


@pytest.mark.timeout(120)
def test_tasks_raising_base_exceptions_are_retried_then_failed_and_the_worker_process_lives_on(
        make_queue, r, redis_url, namespace, runs_log, tmp_path):
    submitter = make_queue()
    failing = [submitter.submit_job(f"fault.scale.{name}", resource_id=name,
                                    params={"n": 0, "log": runs_log.path}, retries=1)
               for name in BASE_EXCEPTIONS]
    # Same resources: these run only after the failures released them.
    after = [submitter.submit_job("fault.scale.ok", resource_id=name, params={"n": 1, "log": runs_log.path})
             for name in BASE_EXCEPTIONS]
    worker = start_worker(redis_url, namespace, RAISERS, tmp_path)
    try:
        wait_until(lambda: submitter.stats()["failed"] == len(failing)
                   and runs_log.lines().count("fault.scale.ok 1") == len(after), timeout=60)
        assert worker.poll() is None, (tmp_path / "worker.stderr").read_text()
        lines = runs_log.lines()
        for name in BASE_EXCEPTIONS:
            assert lines.count(f"fault.scale.{name} 0") == 2  # the run and its one retry
        assert len(lines) == 2 * len(BASE_EXCEPTIONS) + len(after)
        failed = {job.id: job for job in submitter.failed_jobs()}
        assert sorted(failed) == sorted(failing)
        for job_id, name in zip(failing, ["SystemExit", "KeyboardInterrupt", "GreenletExit", "Timeout"]):
            assert name in failed[job_id].error and failed[job_id].attempts == 2
        wait_until(lambda: submitter.stats()["active"] == 0 and submitter.stats()["pending"] == 0)
        assert_queue_settled(r, submitter.keys, failing)
        # Still taking work.
        submitter.submit_job("fault.scale.ok", params={"n": 2, "log": runs_log.path})
        wait_until(lambda: "fault.scale.ok 2" in runs_log.lines(), timeout=30)
    finally:
        status = stop_worker(worker)
    assert status == 0, (tmp_path / "worker.stderr").read_text()


# -- tasks that spawn greenlets and return ----------------------------------------------

SPAWN = os.path.join(TASKS, "fault_scale_spawn.py")


def test_a_task_whose_spawned_greenlets_outlive_it_succeeds_and_they_finish_later(make_queue, r, runs_log):
    queue = make_queue(SPAWN, worker_count=4)
    events = Events(queue)
    queue.start()
    job_id = queue.submit_job("fault.scale.spawn", resource_id="s",
                              params={"n": 1, "log": runs_log.path, "child": "finish", "delay": 0.3,
                                      "count": 3})
    wait_until(lambda: [job.id for job in events["job_success"]] == [job_id], timeout=15)
    wait_until(lambda: runs_log.lines().count("child 1") == 3, timeout=15)
    assert runs_log.lines() == ["job 1", "child 1", "child 1", "child 1"]
    assert_queue_settled(r, queue.keys, [])


def test_a_spawned_greenlet_raising_after_its_task_returned_does_not_fail_the_job_or_the_worker(
        make_queue, r, runs_log):
    queue = make_queue(SPAWN, worker_count=4)
    events = Events(queue)
    queue.start()
    first = queue.submit_job("fault.scale.spawn", resource_id="s",
                             params={"n": 1, "log": runs_log.path, "child": "raise", "delay": 0.2})
    wait_until(lambda: [job.id for job in events["job_success"]] == [first], timeout=15)
    gevent.sleep(0.5)  # the spawned greenlet has raised by now
    second = queue.submit_job("fault.scale.spawn", resource_id="s",
                              params={"n": 2, "log": runs_log.path, "child": "finish", "delay": 0})
    wait_until(lambda: second in [job.id for job in events["job_success"]], timeout=15)
    wait_until(lambda: "child 2" in runs_log.lines(), timeout=15)
    assert runs_log.lines() == ["job 1", "job 2", "child 2"]
    assert events["job_fail"] == []
    assert_queue_settled(r, queue.keys, [])


def test_greenlets_a_task_left_sleeping_do_not_hold_up_a_graceful_shutdown(make_queue, r, runs_log):
    queue = make_queue(SPAWN, worker_count=4)
    events = Events(queue)
    queue.start()
    queue.submit_job("fault.scale.spawn", params={"n": 1, "log": runs_log.path, "child": "sleep"})
    wait_until(lambda: events["job_success"], timeout=15)
    started = time.monotonic()
    queue.shutdown()
    assert time.monotonic() - started < 10
    assert runs_log.lines() == ["job 1"]
    assert_queue_settled(r, queue.keys, [])


@pytest.mark.timeout(120)
def test_a_spawned_greenlet_raising_system_exit_does_not_kill_the_worker_process(
        make_queue, r, redis_url, namespace, runs_log, tmp_path):
    submitter = make_queue()
    first = submitter.submit_job("fault.scale.spawn", resource_id="s",
                                 params={"n": 1, "log": runs_log.path, "child": "exit", "delay": 0.2})
    worker = start_worker(redis_url, namespace, SPAWN, tmp_path)
    try:
        wait_until(lambda: "job 1" in runs_log.lines(), timeout=30)
        wait_until(lambda: not unfinished(r, submitter.keys.job(first)), timeout=15)
        gevent.sleep(1.0)  # the spawned greenlet has raised SystemExit by now
        assert worker.poll() is None, (tmp_path / "worker.stderr").read_text()
        submitter.submit_job("fault.scale.spawn", resource_id="s",
                             params={"n": 2, "log": runs_log.path, "child": "finish", "delay": 0})
        wait_until(lambda: "child 2" in runs_log.lines(), timeout=30)
        assert runs_log.lines() == ["job 1", "job 2", "child 2"]
        assert submitter.stats()["failed"] == 0
    finally:
        status = stop_worker(worker)
    assert status == 0, (tmp_path / "worker.stderr").read_text()
