"""Tracing (greenq/tracing.py): a producer span at submit, a consumer span
around perform, joined through the trace context in the job record;
in-process with the SDK's in-memory exporter, and in the children of a
real `greenq run -c 2` whose hook sets the SDK up after they start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import gevent
import pytest
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conftest import TASKS, wait_until
from greenq import tracing

SECRET = "hunter2-do-not-trace"  # in every job's params: must show in no span


class Started(SpanProcessor):
    """Names every span when it starts, finished or not."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def on_start(self, span, parent_context=None) -> None:
        self.names.append(span.name)


@pytest.fixture
def spans(monkeypatch):
    """greenq's spans go to an in-memory exporter for this test only (the
    global provider stays unset: other tests see the no-op tracer)."""
    exporter, started = InMemorySpanExporter(), Started()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(started)
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("greenq"))
    exporter.started = started
    yield exporter
    provider.shutdown()


def by_kind(exporter, kind):
    return [s for s in exporter.get_finished_spans() if s.kind == kind]


def assert_no_params(span):
    seen = json.dumps(dict(span.attributes)) + json.dumps([dict(e.attributes or {})
                                                           for e in span.events])
    assert SECRET not in seen and "echo" not in seen


def test_a_run_is_a_child_of_its_submit_through_the_job_record(make_queue, spans, r, namespace):
    queue = make_queue("otel_tasks", queue_id="traced")
    queue.start()
    job_id = queue.submit_job("otel.ok", resource_id="printer-1", params={"p": SECRET})
    assert queue.wait(job_id, timeout=10).state == "succeeded"

    [send] = by_kind(spans, SpanKind.PRODUCER)
    [process] = by_kind(spans, SpanKind.CONSUMER)
    assert send.name == "send traced" and process.name == "process traced"
    assert dict(send.attributes) == {
        "messaging.system": "greenq", "messaging.destination.name": "traced",
        "messaging.operation.type": "send", "messaging.operation.name": "send",
        "messaging.message.id": job_id, "greenq.task": "otel.ok", "greenq.resource": "printer-1"}
    record = queue.get_job(job_id)
    attributes = dict(process.attributes)
    assert attributes == {
        "messaging.system": "greenq", "messaging.destination.name": "traced",
        "messaging.operation.type": "process", "messaging.operation.name": "process",
        "messaging.message.id": job_id, "messaging.destination.partition.id": "0",
        "greenq.task": "otel.ok", "greenq.resource": "printer-1", "greenq.attempt": 1,
        "greenq.lease": record.fencing_token, "greenq.partition": 0,
        "greenq.outcome": "succeeded"}
    # The record carries the send span's W3C context; the run is its child and links it.
    trace_id, span_id = f"{send.context.trace_id:032x}", f"{send.context.span_id:016x}"
    stored = r.hget(f"{namespace}:{{traced}}:job:{job_id}", "trace").decode()
    assert stored.startswith(f"00-{trace_id}-{span_id}-")  # then the flags
    assert process.context.trace_id == send.context.trace_id
    assert process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert process.status.status_code == StatusCode.UNSET
    for span in (send, process):
        assert_no_params(span)


def test_a_failing_run_is_an_error_span_with_its_exception_and_each_attempt_has_one(
        make_queue, spans):
    queue = make_queue("otel_tasks")
    queue.start()
    job_id = queue.submit_job("otel.fail", params=SECRET, retries=1)
    wait_until(lambda: len(by_kind(spans, SpanKind.CONSUMER)) == 2)
    assert queue.wait(job_id, timeout=10).state == "failed"

    runs = by_kind(spans, SpanKind.CONSUMER)
    assert [s.attributes["greenq.attempt"] for s in runs] == [1, 2]
    assert runs[0].attributes["greenq.lease"] < runs[1].attributes["greenq.lease"]
    [send] = by_kind(spans, SpanKind.PRODUCER)
    for span in runs:
        assert span.parent.span_id == send.context.span_id
        assert span.status.status_code == StatusCode.ERROR
        assert span.status.description == "ValueError: asked to fail"
        assert span.attributes["greenq.outcome"] == "failed"
        [event] = span.events
        assert event.name == "exception"
        assert event.attributes["exception.type"] == "ValueError"
        assert_no_params(span)


def test_a_batch_submit_is_one_send_span_whose_context_every_job_carries(make_queue, spans):
    queue = make_queue("otel_tasks")
    queue.start()
    ids = queue.submit_jobs([{"task_id": "otel.ok", "params": SECRET} for _ in range(3)])
    for job_id in ids:
        assert queue.wait(job_id, timeout=10).state == "succeeded"

    [send] = by_kind(spans, SpanKind.PRODUCER)
    assert send.attributes["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in send.attributes
    runs = by_kind(spans, SpanKind.CONSUMER)
    assert sorted(s.attributes["messaging.message.id"] for s in runs) == sorted(ids)
    assert {s.parent.span_id for s in runs} == {send.context.span_id}


def test_a_cancelled_run_is_noted_and_not_an_error(make_queue, spans):
    queue = make_queue("otel_tasks")
    queue.start()
    job_id = queue.submit_job("otel.wait", params={"seconds": 30})
    wait_until(lambda: "process default" in spans.started.names)
    assert queue.cancel(job_id)
    assert queue.wait(job_id, timeout=10).state == "cancelled"

    [run] = by_kind(spans, SpanKind.CONSUMER)
    assert run.attributes["greenq.outcome"] == "cancelled"
    assert [e.name for e in run.events] == ["greenq.cancelled"]
    assert run.status.status_code == StatusCode.UNSET


def test_heartbeat_ticks_make_no_spans(make_queue, spans, r, namespace):
    queue = make_queue("otel_tasks")
    queue.start()
    job_id = queue.submit_job("otel.wait", params={"seconds": 1.0})
    wait_until(lambda: "process default" in spans.started.names)
    beats = f"{namespace}:{{default}}:beats"
    first = r.hget(beats, queue.process_id)
    # The job only heartbeats now (every 0.1 s): several ticks pass.
    wait_until(lambda: int(r.hget(beats, queue.process_id) or 0) >= int(first or 0) + 300)
    assert spans.started.names == ["send default", "process default"]
    assert queue.wait(job_id, timeout=10).state == "succeeded"
    gevent.sleep(0.3)  # more ticks, now idle
    assert spans.started.names == ["send default", "process default"]
    assert len(spans.get_finished_spans()) == 2


def test_without_an_sdk_nothing_is_traced_or_stored(make_queue, r, namespace):
    queue = make_queue("otel_tasks")  # the API's no-op tracer: no provider set
    queue.start()
    job_id = queue.submit_job("otel.ok")
    job = queue.wait(job_id, timeout=10)
    assert job.state == "succeeded" and job.trace is None
    assert not r.hexists(f"{namespace}:{{default}}:job:{job_id}", "trace")


def test_without_the_api_greenq_imports_nothing_of_opentelemetry(redis_url, namespace):
    program = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import greenq, greenq.queue, greenq.worker, greenq.logs\n"
        "from greenq import tracing\n"
        "assert tracing.enabled is False\n"
        f"q = greenq.GreenQueue({redis_url!r}, namespace={namespace!r})\n"
        "q.submit_job('t'); q.submit_jobs([{'task_id': 't'}])\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.')))\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_greenq_run_children_set_up_the_sdk_through_the_hook(spans, make_queue, redis_url,
                                                             namespace, tmp_path):
    out = tmp_path / "spans"
    env = dict(os.environ, GREENQ_TEST_SPANS=str(out),
               PYTHONPATH=os.pathsep.join([TASKS, os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "greenq", "run", "otel_tasks", "-c", "2",
         "--otel", "otel_tasks:setup_tracing", "--redis-url", redis_url,
         "--namespace", namespace], env=env, stderr=subprocess.PIPE, text=True)
    try:
        queue = make_queue()
        ids = [queue.submit_job("otel.ok", params=SECRET) for _ in range(6)]
        for job_id in ids:
            assert queue.wait(job_id, timeout=30).state == "succeeded"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr

    files = sorted(tmp_path.glob("spans.*"))
    lines = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    assert 1 <= len(files) <= 2  # one per child that ran a job, none from the master
    runs = {line["attributes"]["messaging.message.id"]: line for line in lines}
    assert sorted(runs) == sorted(ids) and len(lines) == len(ids)
    sends = {s.attributes["messaging.message.id"]: s for s in by_kind(spans, SpanKind.PRODUCER)}
    for job_id, line in runs.items():
        assert line["kind"] == "SpanKind.CONSUMER"
        assert line["context"]["trace_id"] == f"0x{sends[job_id].context.trace_id:032x}"
        assert line["parent_id"] == f"0x{sends[job_id].context.span_id:016x}"
        assert SECRET not in json.dumps(line)


def test_setup_worker_refuses_a_hook_it_cannot_find():
    with pytest.raises(ValueError, match="no function 'nope' in module 'os'"):
        tracing.setup_worker("os:nope")
    with pytest.raises(ValueError, match="must be 1 or module:function"):
        tracing.setup_worker("yes")
