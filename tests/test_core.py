"""GreenQueue with in-process workers (child_process_count=0): the public
contract, checked through events, stats and the raw Redis state."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import types

import gevent
import gevent.monkey
import pytest

import greenq
from conftest import TASKS, wait_until
from queue_state import assert_queue_empty, unfinished


def task_module(name: str) -> types.ModuleType:
    """The module a task file of tests/tasks was loaded as (by the last register)."""
    return sys.modules["greenq_tasks_" + name]


def recorder(queue, *events):
    """Subscribe lists to events; returns {event: list}."""
    seen = {}
    for event in events:
        seen[event] = []
        queue.on(event, seen[event].append)
    return seen


def prefix(namespace: str, queue_id: str = "default") -> str:
    return f"{namespace}:{{{queue_id}}}:"


def namespace_keys(r, namespace: str) -> list[bytes]:
    return sorted(r.scan_iter(match=namespace + ":*", count=1000))


def assert_queue_is_empty_in_redis(r, namespace: str) -> None:
    """Nothing queued, running, locked or remembered for the default queue."""
    assert_queue_empty(r, prefix(namespace))
    assert r.zcard(prefix(namespace) + "procs") == 0


# -- seed behaviours ---------------------------------------------------------

def _echo_as_module_object() -> types.ModuleType:
    module = types.ModuleType("core_echo_object")
    module.id = "core.echo"
    module.seen = []
    module.perform = module.seen.append
    return module


@pytest.mark.parametrize("how", ["dotted name", "relative path", "absolute path", "module object"])
def test_a_job_for_a_registered_task_runs_with_its_params_and_the_queue_shuts_down_cleanly(
        make_queue, r, namespace, monkeypatch, how):
    queue = make_queue()
    if how == "dotted name":
        module = importlib.import_module("tasks.core_echo")
        module.seen.clear()
        queue.register_task("tasks.core_echo")
    elif how == "relative path":
        monkeypatch.chdir(os.path.dirname(TASKS))
        queue.register_task(os.path.join("tasks", "core_echo.py"))
        module = task_module("core_echo")
    elif how == "absolute path":
        queue.register_task(os.path.join(TASKS, "core_echo.py"))
        module = task_module("core_echo")
    else:
        module = _echo_as_module_object()
        queue.register_task(module)
    seen = recorder(queue, "job_success", "job_fail", "error")
    queue.start()
    params = {"a": [1, 2.5, None, True], "b": "x\u00e9", "c": {"d": -7}}
    job_id = queue.submit_job("core.echo", resource_id="res", params=params)
    wait_until(lambda: seen["job_success"])
    queue.shutdown()
    assert module.seen == [params]
    assert [job.id for job in seen["job_success"]] == [job_id]
    assert seen["job_success"][0].params == params
    assert seen["job_success"][0].resource_id == "res"
    assert seen["job_fail"] == [] and seen["error"] == []
    assert_queue_is_empty_in_redis(r, namespace)


def test_a_task_that_raises_goes_to_the_failed_queue_with_its_traceback_and_a_retry_brings_it_back(
        make_queue, r, namespace):
    queue = make_queue("core_fail_once")
    seen = recorder(queue, "job_success", "job_fail", "job_retry")
    queue.start()
    job_id = queue.submit_job("core.fail_once", resource_id="R", params={"key": "k1"})
    wait_until(lambda: seen["job_fail"])
    failed = seen["job_fail"][0]
    assert failed.id == job_id
    assert "Traceback (most recent call last)" in failed.error
    assert "RuntimeError: boom k1" in failed.error
    assert "core_fail_once.py" in failed.error
    assert r.lrange(prefix(namespace) + "failed", 0, -1) == [job_id.encode()]
    assert r.hlen(prefix(namespace) + "locks") == 0  # the failure released the resource
    assert queue.stats()["failed"] == 1

    assert queue.retry_failed_jobs() == 1
    wait_until(lambda: seen["job_success"])
    assert seen["job_success"][0].id == job_id
    assert seen["job_success"][0].attempts == 2
    assert task_module("core_fail_once").runs == [("k1", "fail"), ("k1", "ok")]
    assert seen["job_retry"] == []
    wait_until(lambda: queue.stats()["active"] == 0)
    assert queue.stats()["failed"] == 0
    assert queue.retry_failed_jobs() == 0


def test_delete_failed_jobs_empties_the_failed_queue_and_then_retry_finds_nothing(
        make_queue, r, namespace):
    queue = make_queue("core_fail_once")
    seen = recorder(queue, "job_fail")
    queue.start()
    ids = [queue.submit_job("core.fail_once", params={"key": f"d{i}", "always": True})
           for i in range(3)]
    wait_until(lambda: len(seen["job_fail"]) == 3)
    assert sorted(job.id for job in seen["job_fail"]) == sorted(ids)
    assert queue.stats()["failed"] == 3

    assert queue.delete_failed_jobs() == 3
    assert queue.stats()["failed"] == 0
    assert queue.failed_jobs() == []
    assert r.llen(prefix(namespace) + "failed") == 0
    for job_id in ids:
        assert not unfinished(r, prefix(namespace) + "job:" + job_id)
    assert queue.retry_failed_jobs() == 0
    assert queue.delete_failed_jobs() == 0


def test_a_task_failing_once_with_one_retry_ends_in_one_retry_then_one_success(make_queue):
    queue = make_queue("core_fail_once")
    seen = recorder(queue, "job_success", "job_fail", "job_retry")
    queue.start()
    job_id = queue.submit_job("core.fail_once", params={"key": "once"}, retries=1)
    wait_until(lambda: seen["job_success"])
    gevent.sleep(0.1)  # room for a wrong extra event
    assert [job.id for job in seen["job_retry"]] == [job_id]
    assert "RuntimeError: boom once" in seen["job_retry"][0].error
    assert seen["job_retry"][0].retries == 0
    assert [job.id for job in seen["job_success"]] == [job_id]
    assert seen["job_success"][0].attempts == 2
    assert seen["job_fail"] == []
    assert queue.stats()["failed"] == 0


# -- decorator tasks ---------------------------------------------------------

def test_several_decorated_tasks_in_one_file_run_and_keep_their_own_timeouts(
        make_queue, r, namespace):
    queue = make_queue("core_decorated")
    seen = recorder(queue, "job_success")
    module = task_module("core_decorated")
    queue.start()
    queue.submit_job("core.add", params={"a": 2, "b": 3})
    queue.submit_job("core.upper", params={"s": "abc"})
    wait_until(lambda: len(seen["job_success"]) == 2)
    assert sorted(module.results) == [("add", 5), ("upper", "ABC")]

    # A running job is leased with its task's timeout (ms) in Redis.
    blocked = queue.submit_job("core.upper", params={"s": "z", "block": True})
    owned_keys = wait_until(lambda: list(r.scan_iter(match=prefix(namespace) + "owned:*")))
    assert len(owned_keys) == 1
    assert r.zscore(owned_keys[0], blocked) == 30000
    module.gate.set()
    wait_until(lambda: len(seen["job_success"]) == 3)
    assert module.results[-1] == ("upper", "Z")


def test_a_task_without_a_timeout_is_leased_with_the_default_ten_seconds(make_queue, r, namespace):
    queue = make_queue("core_decorated", "core_record")
    record = task_module("core_record")
    queue.start()
    # Hold a core.record job so the process owns something while core.add runs.
    queue.submit_job("core.record", params={"name": "holder", "block": True})
    owned = wait_until(lambda: list(r.scan_iter(match=prefix(namespace) + "owned:*")))
    assert r.zrange(owned[0], 0, -1, withscores=True)[0][1] == 10000  # the default timeout
    record.gate.set()
    wait_until(lambda: ("end", "holder") in record.log)


# -- per-resource lock ---------------------------------------------------------

def test_jobs_on_one_resource_never_overlap_and_run_in_submission_order(make_queue):
    queue = make_queue("core_record", worker_count=20)
    module = task_module("core_record")
    seen = recorder(queue, "job_success")
    names = [f"j{i}" for i in range(8)]
    for name in names:
        queue.submit_job("core.record", resource_id="one", params={"name": name, "sleep": 0.02})
    queue.start()
    wait_until(lambda: len(seen["job_success"]) == len(names))
    expected = [event for name in names for event in (("start", name), ("end", name))]
    assert module.log == expected


def test_jobs_on_one_resource_submitted_while_running_still_run_one_at_a_time_in_order(make_queue):
    queue = make_queue("core_record", worker_count=20)
    module = task_module("core_record")
    seen = recorder(queue, "job_success")
    queue.start()
    names = [f"k{i}" for i in range(6)]
    for name in names:
        queue.submit_job("core.record", resource_id="live", params={"name": name, "sleep": 0.01})
        gevent.sleep(0.005)
    wait_until(lambda: len(seen["job_success"]) == len(names))
    assert module.log == [e for name in names for e in (("start", name), ("end", name))]


def test_jobs_on_different_resources_run_concurrently(make_queue):
    queue = make_queue("core_record", worker_count=10)
    module = task_module("core_record")
    queue.start()
    queue.submit_job("core.record", resource_id="A", params={"name": "a", "block": True})
    queue.submit_job("core.record", resource_id="B", params={"name": "b", "block": True})
    wait_until(lambda: len(module.log) == 2)
    assert sorted(module.log) == [("start", "a"), ("start", "b")]
    assert queue.stats()["active"] == 2
    module.gate.set()
    wait_until(lambda: len(module.log) == 4)


def test_jobs_without_a_resource_id_are_not_locked(make_queue, r, namespace):
    queue = make_queue("core_record", worker_count=10)
    module = task_module("core_record")
    queue.start()
    for name in ("x", "y", "z"):
        queue.submit_job("core.record", params={"name": name, "block": True})
    wait_until(lambda: len(module.log) == 3)
    assert all(event == "start" for event, _ in module.log)
    assert r.hlen(prefix(namespace) + "locks") == 0
    assert queue.stats()["waiting"] == 0
    module.gate.set()
    wait_until(lambda: len(module.log) == 6)


def test_waiting_jobs_are_counted_as_waiting_and_stay_out_of_the_pending_list(
        make_queue, r, namespace):
    queue = make_queue("core_record", worker_count=10)
    module = task_module("core_record")
    seen = recorder(queue, "job_success")
    queue.start()
    holder = queue.submit_job("core.record", resource_id="busy", params={"name": "h", "block": True})
    wait_until(lambda: module.log == [("start", "h")])
    waiters = [queue.submit_job("core.record", resource_id="busy", params={"name": f"w{i}"})
               for i in range(3)]
    gevent.sleep(0.1)  # a worker that polled would have fetched them by now
    p = prefix(namespace)
    stats = queue.stats()
    assert stats["waiting"] == 3
    assert stats["active"] == 1
    assert stats["pending"] == 0
    assert r.llen(p + "pending") == 0
    assert r.lrange(p + "wait:busy", 0, -1) == [w.encode() for w in waiters]
    assert r.hget(p + "locks", "busy") == holder.encode()
    assert module.log == [("start", "h")]

    module.gate.set()
    wait_until(lambda: len(seen["job_success"]) == 4)
    assert [job.id for job in seen["job_success"]] == [holder, *waiters]
    wait_until(lambda: queue.stats()["active"] == 0)
    assert queue.stats()["waiting"] == 0
    assert r.hlen(p + "locks") == 0


def test_a_retried_job_keeps_its_resource_so_the_next_job_on_it_does_not_overtake(make_queue):
    queue = make_queue("core_fail_once", worker_count=10)
    module = task_module("core_fail_once")
    seen = recorder(queue, "job_success", "job_retry")
    first = queue.submit_job("core.fail_once", resource_id="R", params={"key": "first"}, retries=1)
    second = queue.submit_job("core.fail_once", resource_id="R", params={"key": "second", "fail": False})
    queue.start()
    wait_until(lambda: len(seen["job_success"]) == 2)
    assert module.runs == [("first", "fail"), ("first", "ok"), ("second", "ok")]
    assert [job.id for job in seen["job_retry"]] == [first]
    assert [job.id for job in seen["job_success"]] == [first, second]


# -- bulk submit ---------------------------------------------------------------

def test_submit_jobs_queues_over_a_thousand_jobs_that_all_run_with_ids_in_input_order(
        make_queue, r, namespace):
    queue = make_queue("core_echo")
    seen = recorder(queue, "job_success")
    count = 1200
    specs = [{"task_id": "core.echo", "params": {"i": i}} for i in range(count)]
    specs[7]["resource_id"] = "bulk-res"
    specs[8]["resource_id"] = "bulk-res"
    specs[9]["retries"] = 2
    ids = queue.submit_jobs(iter(specs))
    assert len(ids) == count and len(set(ids)) == count
    assert all(isinstance(job_id, str) and job_id for job_id in ids)
    assert queue.stats()["pending"] + queue.stats()["waiting"] == count
    for position in (0, 599, count - 1):
        assert r.exists(prefix(namespace) + "job:" + ids[position])
    queue.start()
    wait_until(lambda: len(seen["job_success"]) == count, timeout=20)
    by_id = {job.id: job.params["i"] for job in seen["job_success"]}
    assert [by_id[job_id] for job_id in ids] == list(range(count))
    assert sorted(p["i"] for p in task_module("core_echo").seen) == list(range(count))
    queue.shutdown()
    assert_queue_is_empty_in_redis(r, namespace)


def test_submit_jobs_with_an_invalid_entry_in_the_middle_writes_nothing(make_queue, r, namespace):
    queue = make_queue()
    good = [{"task_id": "core.echo", "resource_id": "x", "params": {"i": i}} for i in range(600)]
    for bad in ({"task_id": "core.echo", "params": {1: "int key"}},
                {"task_id": "core.echo", "retries": -1},
                {"task_id": ""},
                {"task_id": "core.echo", "colour": "red"},
                {"params": {}},
                "core.echo"):
        with pytest.raises((TypeError, ValueError, greenq.GreenQError)):
            queue.submit_jobs(good[:300] + [bad] + good[300:])
        assert namespace_keys(r, namespace) == []
    assert queue.submit_jobs([]) == []
    assert namespace_keys(r, namespace) == []


# -- stats and failed_jobs ---------------------------------------------------------

def test_stats_report_pending_active_failed_and_waiting_at_rest_and_while_jobs_run(make_queue):
    queue = make_queue("core_record", "core_fail_once", worker_count=10)
    module = task_module("core_record")
    seen = recorder(queue, "job_fail", "job_success")
    stats = queue.stats()
    assert {k: stats[k] for k in ("pending", "active", "failed", "waiting")} == \
        {"pending": 0, "active": 0, "failed": 0, "waiting": 0}

    queue.submit_job("core.record", resource_id="s", params={"name": "s1", "block": True})
    queue.submit_job("core.record", resource_id="s", params={"name": "s2"})
    queue.submit_job("core.record", params={"name": "free", "block": True})
    queue.submit_job("core.fail_once", params={"key": "st", "always": True})
    stats = queue.stats()
    assert (stats["pending"], stats["active"], stats["waiting"], stats["failed"]) == (3, 0, 1, 0)

    queue.start()
    wait_until(lambda: seen["job_fail"] and len(module.log) == 2)
    wait_until(lambda: queue.stats()["failed"] == 1)
    stats = queue.stats()
    assert (stats["pending"], stats["active"], stats["waiting"], stats["failed"]) == (0, 2, 1, 1)

    module.gate.set()
    wait_until(lambda: len(seen["job_success"]) == 3)
    wait_until(lambda: queue.stats()["active"] == 0)
    stats = queue.stats()
    assert (stats["pending"], stats["active"], stats["waiting"], stats["failed"]) == (0, 0, 0, 1)


def test_failed_jobs_returns_job_objects_with_all_their_fields_oldest_first(make_queue):
    queue = make_queue("core_fail_once")
    seen = recorder(queue, "job_fail")
    queue.start()
    ids = []
    for i in range(3):
        ids.append(queue.submit_job("core.fail_once", resource_id=f"res{i}",
                                    params={"key": f"f{i}", "always": True, "t": (1, 2)},
                                    retries=1))
        wait_until(lambda: len(seen["job_fail"]) == i + 1)
    jobs = queue.failed_jobs(limit=2)
    assert [job.id for job in jobs] == ids[:2]
    for i, job in enumerate(jobs):
        assert isinstance(job, greenq.Job)
        assert job.task_id == "core.fail_once"
        assert job.resource_id == f"res{i}"
        assert job.params == {"key": f"f{i}", "always": True, "t": [1, 2]}
        assert job.retries == 0
        assert job.attempts == 2
        assert f"RuntimeError: boom f{i}" in job.error and "Traceback" in job.error
    assert [job.id for job in queue.failed_jobs()] == ids
    assert queue.failed_jobs(limit=0) == []


# -- events ----------------------------------------------------------------------

def test_an_event_handler_that_raises_is_logged_and_the_queue_keeps_working(make_queue, caplog):
    queue = make_queue("core_echo")

    def broken(job):
        raise RuntimeError("handler is broken")

    queue.on("job_success", broken)
    seen = recorder(queue, "job_success")
    queue.start()
    with caplog.at_level(logging.ERROR, logger="greenq"):
        first = queue.submit_job("core.echo", params=1)
        wait_until(lambda: len(seen["job_success"]) == 1)
        second = queue.submit_job("core.echo", params=2)
        wait_until(lambda: len(seen["job_success"]) == 2)
    assert [job.id for job in seen["job_success"]] == [first, second]
    logged = [rec for rec in caplog.records if rec.exc_info and "handler is broken" in str(rec.exc_info[1])]
    assert len(logged) == 2


@pytest.mark.parametrize("exception", [SystemExit, gevent.GreenletExit])
def test_an_event_handler_raising_a_base_exception_does_not_stop_event_delivery(make_queue, exception):
    # Tasks raising these are plain failed jobs; a handler raising them must
    # not kill the delivering greenlet (or, for SystemExit, the program).
    queue = make_queue("core_echo")
    calls = []

    def exits_once(job):
        calls.append(job.id)
        if len(calls) == 1:
            raise exception()

    queue.on("job_success", exits_once)
    seen = recorder(queue, "job_success")
    queue.start()
    first = queue.submit_job("core.echo", params=1)
    wait_until(lambda: calls)
    second = queue.submit_job("core.echo", params=2)
    wait_until(lambda: len(task_module("core_echo").seen) == 2)
    wait_until(lambda: len(seen["job_success"]) == 2, timeout=3)
    assert [job.id for job in seen["job_success"]] == [first, second]
    assert calls == [first, second]


def test_subscribing_to_an_unknown_event_raises_value_error(make_queue):
    queue = make_queue()
    with pytest.raises(ValueError, match="job_finished"):
        queue.on("job_finished", print)


def test_a_job_for_an_unknown_task_emits_an_error_and_lands_in_the_failed_queue(make_queue):
    # No grace: it fails at once (tests/test_unknown_tasks.py: with one).
    queue = make_queue("core_echo", unknown_task_grace=0)
    seen = recorder(queue, "error", "job_fail", "job_success")
    queue.start()
    job_id = queue.submit_job("core.nope", resource_id="u", params={"x": 1}, retries=3)
    wait_until(lambda: seen["error"] and queue.stats()["failed"] == 1)
    assert isinstance(seen["error"][0], greenq.UnknownTaskError)
    assert "core.nope" in str(seen["error"][0])
    [failed] = queue.failed_jobs()
    assert failed.id == job_id
    assert "core.nope" in failed.error
    assert failed.params == {"x": 1}
    assert seen["job_success"] == []
    # The resource is free again: the next job on it runs.
    queue.submit_job("core.echo", resource_id="u", params="after")
    wait_until(lambda: seen["job_success"])


# -- shutdown ------------------------------------------------------------------

def test_shutdown_lets_a_running_job_finish_and_delivers_its_success_first(make_queue, r, namespace):
    queue = make_queue("core_record")
    module = task_module("core_record")
    seen = recorder(queue, "job_success")
    queue.start()
    job_id = queue.submit_job("core.record", resource_id="g", params={"name": "slow", "sleep": 0.3})
    wait_until(lambda: module.log == [("start", "slow")])
    queue.shutdown()
    assert module.log == [("start", "slow"), ("end", "slow")]
    assert [job.id for job in seen["job_success"]] == [job_id]
    assert_queue_is_empty_in_redis(r, namespace)


def test_shutdown_twice_is_safe(make_queue):
    queue = make_queue("core_echo")
    seen = recorder(queue, "job_success")
    queue.start()
    queue.submit_job("core.echo", params="x")
    wait_until(lambda: seen["job_success"])
    queue.shutdown()
    queue.shutdown()
    queue.shutdown(timeout=0.1)
    never_started = make_queue("core_echo")
    never_started.shutdown()
    never_started.shutdown()
    assert len(seen["job_success"]) == 1


def test_shutdown_with_a_timeout_gives_a_running_job_back_untouched_and_a_new_queue_runs_it(
        make_queue, r, namespace):
    queue = make_queue("core_record")
    module = task_module("core_record")
    seen = recorder(queue, "job_success", "job_fail", "job_retry")
    queue.start()
    job_id = queue.submit_job("core.record", resource_id="long", params={"name": "long", "sleep": 5})
    wait_until(lambda: module.log == [("start", "long")])
    started = time.monotonic()
    queue.shutdown(timeout=0.2)
    assert time.monotonic() - started < 3
    p = prefix(namespace)
    assert r.lrange(p + "pending", 0, -1) == [job_id.encode()]
    assert r.hget(p + "job:" + job_id, "state") == b"pending"
    assert int(r.hget(p + "job:" + job_id, "attempts")) == 0
    assert r.llen(p + "failed") == 0
    assert r.hget(p + "locks", "long") == job_id.encode()  # it still holds its resource
    assert int(r.hget(p + "counts", "active") or 0) == 0
    assert seen == {"job_success": [], "job_fail": [], "job_retry": []}

    second = make_queue("core_record")
    task_module("core_record").sleep_cap = 0
    seen2 = recorder(second, "job_success")
    second.start()
    wait_until(lambda: seen2["job_success"])
    assert seen2["job_success"][0].id == job_id
    assert seen2["job_success"][0].attempts == 1
    second.shutdown()
    assert_queue_is_empty_in_redis(r, namespace)


# -- serializers -------------------------------------------------------------------

@pytest.mark.parametrize("writer,reader", [("json", "msgpack"), ("msgpack", "json")])
def test_a_job_written_in_one_serializer_is_run_by_a_worker_using_the_other(
        make_queue, r, namespace, writer, reader):
    submitter = make_queue(serializer=writer)
    worker = make_queue("core_echo", serializer=reader)
    seen = recorder(worker, "job_success")
    params = {"t": (1, (2, 3)), "s": "\u2603", "f": 1.5, "n": None, "b": False,
              "big": 2**63 + 5, "neg": -(2**63), "nested": [{"k": ()}]}
    job_id = submitter.submit_job("core.echo", params=params)
    assert r.hget(prefix(namespace) + "job:" + job_id, "enc") == (b"j" if writer == "json" else b"m")
    worker.start()
    wait_until(lambda: seen["job_success"])
    expected = {"t": [1, [2, 3]], "s": "\u2603", "f": 1.5, "n": None, "b": False,
                "big": 2**63 + 5, "neg": -(2**63), "nested": [{"k": []}]}
    assert task_module("core_echo").seen == [expected]


def test_msgpack_carries_bytes_even_to_a_json_configured_worker(make_queue):
    submitter = make_queue(serializer="msgpack")
    worker = make_queue("core_echo", serializer="json")
    seen = recorder(worker, "job_success")
    worker.start()
    submitter.submit_job("core.echo", params={"blob": b"\x00\xff\x80", "list": [b""]})
    wait_until(lambda: seen["job_success"])
    got = task_module("core_echo").seen
    assert got == [{"blob": b"\x00\xff\x80", "list": [b""]}]
    assert type(got[0]["blob"]) is bytes


# -- BaseExceptions ----------------------------------------------------------------

def test_tasks_raising_systemexit_keyboardinterrupt_or_greenletexit_fail_and_the_worker_goes_on(
        make_queue):
    queue = make_queue("core_raisers", worker_count=2)
    seen = recorder(queue, "job_fail", "job_success")
    queue.start()
    ids = {queue.submit_job(task): name for task, name in (
        ("core.system_exit", "SystemExit"), ("core.keyboard_interrupt", "KeyboardInterrupt"),
        ("core.greenlet_exit", "GreenletExit"))}
    wait_until(lambda: len(seen["job_fail"]) == 3)
    for job in seen["job_fail"]:
        assert ids[job.id] in job.error
    assert queue.stats()["failed"] == 3
    for i in range(4):
        queue.submit_job("core.ok", params=i)
    wait_until(lambda: len(seen["job_success"]) == 4)
    assert sorted(task_module("core_raisers").done) == [0, 1, 2, 3]


# -- keys ----------------------------------------------------------------------------

def test_every_redis_key_of_a_queue_starts_with_its_namespace_and_hash_tag(make_queue, r, namespace):
    before = set(r.keys())
    queue = make_queue("core_record", "core_fail_once", queue_id="q-1", worker_count=10)
    module = task_module("core_record")
    queue.start()
    queue.submit_job("core.record", resource_id="kr", params={"name": "hold", "block": True})
    queue.submit_job("core.record", resource_id="kr", params={"name": "wait"})
    queue.submit_job("core.fail_once", resource_id="kf", params={"key": "kf", "always": True}, retries=1)
    queue.submit_jobs([{"task_id": "core.record", "params": {"name": f"b{i}"}} for i in range(5)])
    wait_until(lambda: queue.stats()["failed"] == 1 and ("start", "hold") in module.log)
    during = set(r.keys()) - before
    module.gate.set()
    wait_until(lambda: ("end", "wait") in module.log)
    wait_until(lambda: queue.stats()["active"] == 0)
    after = set(r.keys()) - before
    tag = prefix(namespace, "q-1").encode()
    assert any(b":owned:" in k for k in during) and any(b":wait:" in k for k in during)
    assert any(b":job:" in k for k in after)  # the failed job's record
    for key in during | after:
        assert key.startswith(tag), key


# -- connections ---------------------------------------------------------------------

def test_five_hundred_concurrent_jobs_use_a_small_fixed_number_of_connections(
        make_queue, redis_url, namespace, r):
    """The README's figure: at most 7 connections per process, reached with
    every user busy at once: the shared pool (submits and queries from many
    greenlets), the fetcher, the committer, and the lifeline thread, which
    connects only while the gevent hub is blocked."""
    def clients() -> int:  # this queue's connections, named after the test
        return sum(client["name"] == namespace for client in r.client_list())

    queue = make_queue("core_record", worker_count=500,
                       redis_url=f"{redis_url}?client_name={namespace}")
    module = task_module("core_record")
    queue.start()
    queue.submit_jobs([{"task_id": "core.record", "params": {"name": i, "block": True}}
                       for i in range(500)])
    wait_until(lambda: queue.stats()["active"] == 500, timeout=15)
    wait_until(lambda: len(module.log) == 500)
    # Stats and submits in parallel with running jobs, heartbeats and fetches.
    gevent.joinall([gevent.spawn(queue.stats) for _ in range(20)]
                   + [gevent.spawn(queue.submit_job, "core.record", params={"name": "x"})
                      for _ in range(20)], raise_error=True)
    gevent.monkey.get_original("time", "sleep")(2.5)  # blocks the hub: the lifeline heartbeats
    assert clients() == 7
    module.gate.set()
    wait_until(lambda: queue.stats()["active"] == 0, timeout=15)
    assert clients() == 7
