"""Bad input is refused early and clearly: task definitions, submit arguments,
constructor settings; and the submit-only side works in unpatched programs."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import textwrap

import pytest

import greenq
from greenq import GreenQueue
from conftest import TASKS, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT_ERRORS = (TypeError, ValueError, greenq.GreenQError)


def task_file(name: str) -> str:
    return os.path.join(TASKS, name + ".py")


def namespace_keys(r, namespace: str) -> list[bytes]:
    return sorted(r.scan_iter(match=namespace + ":*", count=1000))


# -- register_task -------------------------------------------------------------

def test_registering_a_module_without_a_task_raises_task_definition_error(make_queue):
    queue = make_queue()
    with pytest.raises(greenq.TaskDefinitionError, match="no task"):
        queue.register_task(task_file("core_no_task"))


def test_registering_the_same_file_twice_raises_task_definition_error(make_queue):
    queue = make_queue("core_dup_a")
    with pytest.raises(greenq.TaskDefinitionError, match="core.dup"):
        queue.register_task(task_file("core_dup_a"))


def test_registering_the_same_decorated_file_twice_raises_task_definition_error(make_queue):
    queue = make_queue("core_decorated")
    with pytest.raises(greenq.TaskDefinitionError, match="core.add"):
        queue.register_task(task_file("core_decorated"))


def test_registering_two_files_with_the_same_task_id_raises_task_definition_error(make_queue):
    queue = make_queue("core_dup_a")
    with pytest.raises(greenq.TaskDefinitionError, match="core.dup"):
        queue.register_task(task_file("core_dup_b"))


def test_one_file_defining_the_same_task_id_twice_raises_task_definition_error(make_queue):
    queue = make_queue()
    with pytest.raises(greenq.TaskDefinitionError, match="core.twice"):
        queue.register_task(task_file("core_dup_inside"))


@pytest.mark.parametrize("defining", ["tasks.core_decorated", "core_decorated"],
                         ids=["defining module by name", "defining module by path"])
@pytest.mark.parametrize("order", ["defining first", "importing first"])
def test_a_decorated_task_imported_by_another_task_module_is_registered_once(
        make_queue, defining, order):
    # core_reexport imports core.add from tasks.core_decorated; by path, that
    # file is loaded a second time under another module name.
    specs = [defining, "core_reexport"]
    queue = make_queue(*(specs if order == "defining first" else specs[::-1]))
    done = []
    queue.on("job_success", done.append)
    queue.on("job_fail", done.append)

    assert sorted(queue.registry.tasks) == ["core.add", "core.own", "core.upper"]
    queue.start()
    queue.submit_job("core.add", params={"a": 2, "b": 3})
    queue.submit_job("core.own", params="mine")
    wait_until(lambda: len(done) == 2)
    assert [job.error for job in done] == [None, None]


def test_a_module_that_only_gathers_tasks_of_other_modules_registers_them(make_queue, tmp_path):
    gather = tmp_path / "gather_tasks.py"
    gather.write_text("from tasks.core_decorated import add, upper  # noqa: F401\n")

    queue = make_queue(str(gather))

    assert sorted(queue.registry.tasks) == ["core.add", "core.upper"]


def test_two_definitions_of_one_decorated_task_id_in_two_files_are_still_refused(
        make_queue, tmp_path):
    twin = tmp_path / "other_add.py"
    twin.write_text('import greenq\n\n@greenq.task("core.add")\ndef add(params):\n    pass\n')
    queue = make_queue("core_decorated")

    with pytest.raises(greenq.TaskDefinitionError, match="core.add"):
        queue.register_task(str(twin))


TWIN_TASK = """
import pickle

import greenq


class Box:
    def __init__(self, value):
        self.value = value


@greenq.task({task_id!r})
def unbox(params):
    # pickle finds Box through sys.modules[__name__]: this module, not a namesake.
    return pickle.loads(pickle.dumps(Box(params))).value
"""


def test_two_task_files_with_one_base_name_in_two_folders_each_keep_their_own_module(
        make_queue, tmp_path):
    paths = []
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "tasks.py"
        path.write_text(TWIN_TASK.format(task_id=f"twin.{folder}"))
        paths.append(str(path))
    queue = make_queue(*paths)
    done = []
    queue.on("job_success", done.append)
    queue.on("job_fail", done.append)

    for path, task_id in zip(paths, ("twin.first", "twin.second")):
        module = sys.modules[queue.registry.get(task_id).perform.__module__]
        assert module.__file__ == path
    queue.start()
    queue.submit_job("twin.first", params=1)
    queue.submit_job("twin.second", params=2)
    wait_until(lambda: len(done) == 2)
    assert [job.error for job in done] == [None, None]


@pytest.mark.parametrize("name", ["core_bad_timeout", "core_str_timeout"])
def test_a_task_with_a_bad_timeout_raises_task_definition_error(make_queue, name):
    queue = make_queue()
    with pytest.raises(greenq.TaskDefinitionError, match="timeout"):
        queue.register_task(task_file(name))


@pytest.mark.parametrize("timeout", [0, -5, float("nan"), "3", None, True])
def test_the_task_decorator_refuses_a_bad_timeout(timeout):
    with pytest.raises(greenq.TaskDefinitionError):
        greenq.task("core.decorated_bad", timeout=timeout)(lambda params: None)


def test_the_task_decorator_refuses_an_empty_task_id():
    with pytest.raises(greenq.TaskDefinitionError):
        greenq.task("")(lambda params: None)


def test_a_task_whose_perform_is_not_callable_raises_task_definition_error(make_queue):
    queue = make_queue()
    with pytest.raises(greenq.TaskDefinitionError, match="callable"):
        queue.register_task(task_file("core_not_callable"))


@pytest.mark.parametrize("spec", [os.path.join(TASKS, "core_missing_file.py"),
                                  "core_no_such_dir/core_missing.py",
                                  "core_no_such_module_xyz",
                                  "core_no_such_package_xyz.tasks"])
def test_a_missing_task_file_or_module_raises_task_definition_error(make_queue, spec):
    queue = make_queue()
    with pytest.raises(greenq.TaskDefinitionError):
        queue.register_task(spec)


def test_a_refused_registration_leaves_the_queue_usable(make_queue, r, namespace):
    queue = make_queue()
    with pytest.raises(greenq.TaskDefinitionError):
        queue.register_task(task_file("core_dup_inside"))
    queue.register_task(task_file("core_echo"))
    done = []
    queue.on("job_success", done.append)
    queue.start()
    queue.submit_job("core.echo", params=[1])
    wait_until(lambda: done)
    assert done[0].params == [1]


def test_registering_a_task_after_start_raises_state_error(make_queue):
    queue = make_queue("core_echo")
    queue.start()
    with pytest.raises(greenq.StateError):
        queue.register_task(task_file("core_dup_a"))


def test_starting_a_queue_twice_or_after_shutdown_raises_state_error(make_queue):
    queue = make_queue("core_echo")
    queue.start()
    with pytest.raises(greenq.StateError):
        queue.start()
    queue.shutdown()
    with pytest.raises(greenq.StateError):
        queue.start()


# -- submit_job arguments --------------------------------------------------------

@pytest.mark.parametrize("task_id", ["", None, b"core.echo", 1.5, ["core.echo"], True])
def test_submit_refuses_an_empty_or_non_str_task_id_and_writes_nothing(make_queue, r, namespace, task_id):
    queue = make_queue()
    with pytest.raises(INPUT_ERRORS):
        queue.submit_job(task_id)
    assert namespace_keys(r, namespace) == []


def test_submit_refuses_an_int_task_id_because_task_ids_are_str(make_queue, r, namespace):
    queue = make_queue()
    with pytest.raises(INPUT_ERRORS):
        queue.submit_job(42)
    assert namespace_keys(r, namespace) == []


@pytest.mark.parametrize("retries,error", [(-1, ValueError), (True, TypeError),
                                           (1.0, TypeError), ("1", TypeError), (None, TypeError)])
def test_submit_refuses_negative_or_non_int_retries_and_writes_nothing(
        make_queue, r, namespace, retries, error):
    queue = make_queue()
    with pytest.raises(error):
        queue.submit_job("core.echo", retries=retries)
    assert namespace_keys(r, namespace) == []


class _Opaque:
    pass


UNENCODABLE = {
    "set": {1, 2},
    "frozenset": frozenset(),
    "datetime": datetime.datetime(2024, 1, 1),
    "object": _Opaque(),
    "int-keyed dict": {1: "a"},
    "tuple-keyed dict": {("a",): 1},
    "int over 64 bits": 2**64,
    "int below -2**63": -(2**63) - 1,
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": float("-inf"),
    "lone surrogate": "\ud800",
    "lone surrogate as key": {"\udfff": 1},
    "nested set": {"a": [1, {"b": {3}}]},
    "bytearray": bytearray(b"x"),
    "function": len,
}


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
@pytest.mark.parametrize("what", sorted(UNENCODABLE))
def test_submit_refuses_params_the_serializer_cannot_carry_and_writes_nothing(
        make_queue, r, namespace, serializer, what):
    queue = make_queue(serializer=serializer)
    with pytest.raises(greenq.ParamsError):
        queue.submit_job("core.echo", params=UNENCODABLE[what])
    with pytest.raises(greenq.ParamsError):
        queue.submit_jobs([{"task_id": "core.echo", "params": UNENCODABLE[what]}])
    assert namespace_keys(r, namespace) == []


def test_params_error_is_both_a_value_error_and_a_greenq_error():
    assert issubclass(greenq.ParamsError, ValueError)
    assert issubclass(greenq.ParamsError, greenq.GreenQError)


def test_json_mode_refuses_bytes_params_and_msgpack_mode_takes_them(make_queue, r, namespace):
    as_json = make_queue(serializer="json")
    with pytest.raises(greenq.ParamsError, match="bytes"):
        as_json.submit_job("core.echo", params={"data": b"\x00"})
    assert namespace_keys(r, namespace) == []
    as_msgpack = make_queue(serializer="msgpack")
    job_id = as_msgpack.submit_job("core.echo", params={"data": b"\x00"})
    assert r.exists(f"{namespace}:{{default}}:job:{job_id}")


def test_submit_refuses_over_long_task_and_resource_ids_and_writes_nothing(make_queue, r, namespace):
    queue = make_queue()
    with pytest.raises(INPUT_ERRORS):
        queue.submit_job("t" * 513)
    with pytest.raises(INPUT_ERRORS):
        queue.submit_job("core.echo", resource_id="r" * 513)
    with pytest.raises(INPUT_ERRORS):
        queue.submit_job("core.echo", resource_id="")
    with pytest.raises(INPUT_ERRORS):
        queue.submit_job("core.echo", resource_id="\ud800")
    assert namespace_keys(r, namespace) == []
    # The limits are not off by one.
    queue.submit_job("t" * 512, resource_id="r" * 512)
    assert len(namespace_keys(r, namespace)) > 0


def test_submit_refuses_params_over_max_params_bytes_and_writes_nothing(make_queue, r, namespace):
    for serializer in ("msgpack", "json"):
        queue = make_queue(serializer=serializer, max_params_bytes=1000)
        with pytest.raises(greenq.ParamsError, match="1000"):
            queue.submit_job("core.echo", params={"x": "y" * 2000})
        with pytest.raises(greenq.ParamsError):
            queue.submit_jobs([{"task_id": "core.echo", "params": "small"},
                               {"task_id": "core.echo", "params": ["z" * 600, "z" * 600]}])
    assert namespace_keys(r, namespace) == []
    queue.submit_job("core.echo", params={"x": "y" * 900})
    assert len(namespace_keys(r, namespace)) > 0


def test_submit_refuses_positional_or_unknown_keyword_arguments(make_queue, r, namespace):
    queue = make_queue()
    with pytest.raises(TypeError):
        queue.submit_job("core.echo", "resource")
    with pytest.raises(TypeError):
        queue.submit_job("core.echo", resource="r")
    assert namespace_keys(r, namespace) == []


# -- the constructor ---------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"serializer": "pickle"},
    {"serializer": None},
    {"child_process_count": -1},
    {"child_process_count": 1.5},
    {"worker_count": 0},
    {"worker_count": -3},
    {"namespace": "a{b"},
    {"namespace": "a}b"},
    {"namespace": ""},
    {"queue_id": "{q}"},
    {"flush_stale_timeout": 0},
])
def test_the_constructor_refuses_bad_settings_with_value_error(redis_url, kwargs):
    with pytest.raises(ValueError):
        GreenQueue(redis_url=redis_url, **kwargs)


def test_the_constructor_refuses_redis_url_and_redis_config_together(redis_server):
    with pytest.raises(ValueError, match="not both"):
        GreenQueue(redis_url=redis_server.url, redis_config={"host": "127.0.0.1", "port": redis_server.port})


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "127.0.0.1:6379", "mysql://x/0"])
def test_the_constructor_refuses_a_url_with_a_bad_scheme(url):
    with pytest.raises(ValueError):
        GreenQueue(redis_url=url)


def test_redis_config_as_a_dict_with_host_port_and_db_is_used(redis_server, namespace):
    queue = GreenQueue(redis_config={"host": "127.0.0.1", "port": redis_server.port, "db": 3},
                       namespace=namespace)
    db3 = redis_server.client(db=3)
    db0 = redis_server.client(db=0)
    try:
        job_id = queue.submit_job("core.echo", params={"a": 1})
        assert db3.exists(f"{namespace}:{{default}}:job:{job_id}")
        assert db3.llen(f"{namespace}:{{default}}:pending") == 1
        assert list(db0.scan_iter(match=namespace + ":*")) == []
        assert queue.stats()["pending"] == 1
    finally:
        queue.shutdown()
        for key in db3.scan_iter(match=namespace + ":*"):
            db3.delete(key)
        db3.close()
        db0.close()


def test_the_redis_url_db_number_is_used(redis_server, namespace):
    queue = GreenQueue(redis_url=f"redis://127.0.0.1:{redis_server.port}/5", namespace=namespace)
    db5 = redis_server.client(db=5)
    try:
        queue.submit_job("core.echo")
        assert db5.llen(f"{namespace}:{{default}}:pending") == 1
    finally:
        queue.shutdown()
        for key in db5.scan_iter(match=namespace + ":*"):
            db5.delete(key)
        db5.close()


# -- unpatched processes -------------------------------------------------------------

def run_unpatched(script: str, **values) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter that gevent has not patched."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("GREENQ_REDIS_URL", None)
    env.pop("REDIS_URL", None)
    preamble = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    return subprocess.run([sys.executable, "-c", preamble + textwrap.dedent(script)],
                          env=env, capture_output=True, text=True, timeout=60)


THREADS_SCRIPT = """
import json, threading
import gevent.monkey
from greenq import GreenQueue

assert not gevent.monkey.is_module_patched("socket")
q = GreenQueue(redis_url=URL, namespace=NS)
ids, seen_stats, failed_seen, errors = [], [], [], []
lock = threading.Lock()

def submitter(t):
    try:
        for i in range(25):
            job_id = q.submit_job("core.echo", resource_id=f"r{t}", params={"t": t, "i": i})
            with lock:
                ids.append(job_id)
            if i % 5 == 0:
                seen_stats.append(q.stats())
                failed_seen.append(len(q.failed_jobs()))
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=submitter, args=(t,)) for t in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(30)
failed = [(job.id, job.task_id) for job in q.failed_jobs()]
out = {"ids": ids, "errors": errors, "stats": q.stats(), "failed": failed,
       "failed_seen": failed_seen, "stats_calls": len(seen_stats),
       "threads_alive": sum(thread.is_alive() for thread in threads)}
out["retried"] = q.retry_failed_jobs()
out["stats_after_retry"] = q.stats()
print(json.dumps(out))
"""


def test_submit_stats_and_failed_queue_calls_work_from_threads_in_an_unpatched_process(
        make_queue, redis_url, namespace, r):
    # Two failed jobs for the subprocess to see and retry.
    worker = make_queue("core_fail_once")
    fails = []
    worker.on("job_fail", fails.append)
    worker.start()
    failed_ids = [worker.submit_job("core.fail_once", params={"key": f"u{i}", "always": True})
                  for i in range(2)]
    wait_until(lambda: len(fails) == 2)
    worker.shutdown()

    result = run_unpatched(THREADS_SCRIPT, URL=redis_url, NS=namespace)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["errors"] == [] and out["threads_alive"] == 0
    assert len(out["ids"]) == 100 and len(set(out["ids"])) == 100
    assert out["stats_calls"] == 20 and set(out["failed_seen"]) == {2}
    assert {k: out["stats"][k] for k in ("pending", "active", "waiting", "failed")} == \
        {"pending": 4, "active": 0, "waiting": 96, "failed": 2}
    assert sorted(out["failed"]) == sorted([job_id, "core.fail_once"] for job_id in failed_ids)
    assert out["retried"] == 2
    assert out["stats_after_retry"]["failed"] == 0 and out["stats_after_retry"]["pending"] == 6

    p = f"{namespace}:{{default}}:"
    assert r.llen(p + "pending") == 6
    assert int(r.hget(p + "counts", "waiting")) == 96
    assert sorted(r.hgetall(p + "locks")) == [b"r0", b"r1", b"r2", b"r3"]
    for job_id in out["ids"]:
        assert r.hget(p + "job:" + job_id, "task") == b"core.echo"


NOT_PATCHED_SCRIPT = """
import greenq
from greenq import GreenQueue

q = GreenQueue(redis_url=URL, namespace=NS)
q.register_task(TASK)
try:
    q.start()
except greenq.NotPatchedError as exc:
    print("NotPatchedError:", exc)
else:
    print("started")
    q.shutdown()
job_id = q.submit_job("core.echo", params={"still": "works"})
print("submitted", job_id)
"""


def test_start_in_an_unpatched_process_raises_not_patched_error_with_a_clear_message(
        redis_url, namespace, r):
    result = run_unpatched(NOT_PATCHED_SCRIPT, URL=redis_url, NS=namespace,
                           TASK=os.path.join(TASKS, "core_echo.py"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("NotPatchedError:")
    assert "patch_all" in lines[0] and "monkey" in lines[0]
    # The refused start left nothing running, and submitting still works.
    job_id = lines[1].split()[1]
    p = f"{namespace}:{{default}}:"
    assert r.lrange(p + "pending", 0, -1) == [job_id.encode()]
    assert r.zcard(p + "procs") == 0
