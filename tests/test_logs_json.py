"""`greenq run --log-format json`: every stderr line, the master's and its
children's, is one JSON object; job lines carry the job's fields, and its
trace ids when tracing is on (here set up by `--otel` from OTEL_* variables)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import TASKS
from greenq import logs, tracing


def run_greenq(make_queue, redis_url, namespace, *options, env=None):
    """`greenq run otel_tasks --log-format json *options`; a job that fails
    (no retries) and one that succeeds; SIGTERM; (stdout, stderr lines)."""
    env = dict(env or os.environ, PYTHONPATH=os.pathsep.join([TASKS, os.environ.get(
        "PYTHONPATH", "")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "greenq", "run", "otel_tasks", "--log-format", "json",
         "--redis-url", redis_url, "--namespace", namespace, *options],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        queue = make_queue()
        failed = queue.submit_job("otel.fail", resource_id="printer-7")
        assert queue.wait(failed, timeout=30).state == "failed"
        succeeded = queue.submit_job("otel.ok")
        assert queue.wait(succeeded, timeout=30).state == "succeeded"
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    return failed, succeeded, stdout, stderr.splitlines()


def test_every_line_of_master_and_children_is_json_and_job_lines_name_the_job(
        make_queue, redis_url, namespace):
    failed, succeeded, _, lines = run_greenq(make_queue, redis_url, namespace, "-c", "1")
    records = [json.loads(line) for line in lines]  # each line alone: one object
    assert all({"time", "level", "logger", "pid", "message"} <= set(r) for r in records)
    assert len({r["pid"] for r in records}) == 2  # the master and its child

    [line] = [r for r in records if r.get("job_id") == failed]
    assert line["level"] == "WARNING" and line["logger"] == "greenq.jobs"
    assert line["task"] == "otel.fail" and line["resource"] == "printer-7"
    assert line["attempt"] == 1
    assert "moved to the failed queue" in line["message"]
    assert "ValueError: asked to fail" in line["message"]  # the traceback, inside the one line
    [line] = [r for r in records if r.get("job_id") == succeeded]
    assert line["level"] == "INFO" and line["task"] == "otel.ok" and line["resource"] is None
    assert "trace_id" not in line


def test_job_lines_carry_the_trace_ids_of_their_run_when_traced(
        make_queue, redis_url, namespace, monkeypatch):
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("greenq"))
    env = dict(os.environ, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="json-log-test")
    failed, _, stdout, lines = run_greenq(make_queue, redis_url, namespace, "--otel", env=env)
    records = [json.loads(line) for line in lines]
    [line] = [r for r in records if r.get("job_id") == failed]
    [send] = [s for s in exporter.get_finished_spans()
              if s.attributes.get("messaging.message.id") == failed]
    assert line["trace_id"] == f"{send.context.trace_id:032x}"

    # The worker's console exporter (OTEL_TRACES_EXPORTER) printed its span on
    # stdout: the one whose id the job line names.
    decoder, spans, at = json.JSONDecoder(), [], 0
    while stdout[at:].strip():
        span, at = decoder.raw_decode(stdout, len(stdout) - len(stdout[at:].lstrip()))
        spans.append(span)
    [run] = [s for s in spans if s["attributes"]["messaging.message.id"] == failed]
    assert run["context"]["span_id"] == "0x" + line["span_id"]
    assert run["resource"]["attributes"]["service.name"] == "json-log-test"
    assert run["status"]["status_code"] == "ERROR"


def test_a_line_logged_inside_a_span_carries_its_ids_and_bad_formats_are_refused():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter("json"))
    handler.addFilter(logs.TraceIds())
    logger = logging.getLogger("greenq.test_logs_json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with TracerProvider().get_tracer("t").start_as_current_span("perform") as span:
            logger.warning("inside")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = [json.loads(line) for line in out.getvalue().splitlines()]
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "trace_id" not in outside
    with pytest.raises(ValueError, match="log format must be one of text, json"):
        logs.formatter("yaml")
