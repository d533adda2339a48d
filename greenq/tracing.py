"""OpenTelemetry spans for a job's journey: a PRODUCER span where it is
submitted, a CONSUMER span around `perform`, joined through the W3C trace
context (traceparent) kept in the job's record (field "trace").

Optional: with the `otel` extra (opentelemetry-api) installed, `enabled` is
True and greenq calls the functions below; without it this module imports
nothing of opentelemetry and the hot paths pay one attribute check
(`tracing.enabled`). With the API but no SDK configured, the API's no-op
tracer answers: no span is recorded and no trace is stored.

Spans follow the OpenTelemetry messaging semantic conventions:
`messaging.system` "greenq", `messaging.destination.name` the queue id,
`messaging.operation.type` "send" / "process", `messaging.message.id` the
job id, and greenq's own attributes under `greenq.*` (task, resource,
attempt, lease, partition, outcome). Never params or results: they may hold
anything (passwords, personal data) and be large.

One send span per submit call: submit_job's for its job, submit_jobs' for
the whole batch (`messaging.batch.message_count`), whose jobs all carry its
context. A span per job would cost a bulk submit of 100,000 jobs as many
spans, for nothing a trace viewer shows better. Each run of a job (each
attempt) gets its own process span, a child of the send span and linked to
it as the conventions ask. The heartbeat tick makes no span.

Worker processes set up the SDK themselves (`setup_worker`): a child
process is a fresh interpreter, and an SDK's exporter threads do not survive
a fork anyway.
"""

from __future__ import annotations

import importlib
import logging
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from .errors import JobCancelled, WorkerShutdown

log = logging.getLogger(__name__)

# "1": each worker process sets up the SDK from OpenTelemetry's own OTEL_*
# variables; "module:function": each calls that function instead.
ENV = "GREENQ_OTEL"

try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the extra is not installed: greenq runs untraced
    enabled = False
else:
    enabled = True
    _propagator = TraceContextTextMapPropagator()
    # A proxy: it follows the provider the application sets, even later.
    _proxy = _tracer = _trace.get_tracer("greenq")
    _cached: tuple[Any, Any] = (None, None)  # (global provider, its tracer or None)


def _active() -> Any:
    """The tracer to use; None while no SDK is set up, so that the API alone
    costs one lookup (its no-op spans would cost microseconds each)."""
    global _cached
    if _tracer is not _proxy:  # set by hand (the tests)
        return _tracer
    provider = _trace.get_tracer_provider()
    if provider is not _cached[0]:
        real = not isinstance(provider, _trace.ProxyTracerProvider)
        _cached = (provider, provider.get_tracer("greenq") if real else None)
    return _cached[1]


def traceparent(span: Any) -> str:
    """`span`'s W3C traceparent ("" for a span that records nothing)."""
    context = span.get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def ids(trace: str | None) -> tuple[str, str] | None:
    """(trace id, span id) in hex from a traceparent, None if it has none."""
    parts = (trace or "").split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    return parts[1], parts[2]


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, if one is recording."""
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def recording() -> bool:
    """Whether spans are made now (the API installed and an SDK set up): a
    submit checks this before it pays for the send span's context manager
    (about 10 us, 7% of a single submit, with the API alone)."""
    return enabled and _active() is not None


@contextmanager
def send(queue_id: str, rows: Sequence[list]) -> Iterator[Any]:
    """The PRODUCER span of one submit call; appends its traceparent to each
    of `rows` (submit.lua's groups: id, task, resource, ..., due)."""
    tracer = _active()
    if tracer is None:
        yield None
        return
    attributes: dict[str, Any] = {
        "messaging.system": "greenq", "messaging.destination.name": queue_id,
        "messaging.operation.type": "send", "messaging.operation.name": "send"}
    if len(rows) == 1:
        attributes["messaging.message.id"] = rows[0][0]
        attributes["greenq.task"] = rows[0][1]
        if rows[0][2]:
            attributes["greenq.resource"] = rows[0][2]
    else:
        attributes["messaging.batch.message_count"] = len(rows)
    with tracer.start_as_current_span(f"send {queue_id}", kind=SpanKind.PRODUCER,
                                      attributes=attributes) as span:
        parent = traceparent(span)
        for row in rows:
            row.append(parent)
        yield span


def perform(func: Callable[[Any], Any], job: Any, queue_id: str) -> Any:
    """Run `func(job.params)` in a CONSUMER span, child of the job's send
    span. Sets `job.trace` to this span's context, which log lines about the
    job carry (greenq/logs.py)."""
    tracer = _active()
    if tracer is None:
        return func(job.params)
    creation = _propagator.extract({"traceparent": job.trace}) if job.trace else None
    sent = _trace.get_current_span(creation).get_span_context() if creation else None
    attributes: dict[str, Any] = {
        "messaging.system": "greenq", "messaging.destination.name": queue_id,
        "messaging.operation.type": "process", "messaging.operation.name": "process",
        "messaging.message.id": job.id, "messaging.destination.partition.id": str(job.partition),
        "greenq.task": job.task_id, "greenq.attempt": job.attempts,
        "greenq.lease": job.fencing_token, "greenq.partition": job.partition}
    if job.resource_id is not None:
        attributes["greenq.resource"] = job.resource_id
    links = [Link(sent)] if sent is not None and sent.is_valid else None
    # Exceptions are recorded below: a cancel or a shutdown is no error.
    with tracer.start_as_current_span(f"process {queue_id}", context=creation,
                                      kind=SpanKind.CONSUMER, attributes=attributes,
                                      links=links, record_exception=False,
                                      set_status_on_exception=False) as span:
        job.trace = traceparent(span) or job.trace
        try:
            result = func(job.params)
        except JobCancelled:
            span.set_attribute("greenq.outcome", "cancelled")
            span.add_event("greenq.cancelled")
            raise
        except WorkerShutdown:
            span.set_attribute("greenq.outcome", "given_back")
            raise
        except BaseException as exc:
            span.set_attribute("greenq.outcome", "failed")
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        span.set_attribute("greenq.outcome", "succeeded")
        return result


def setup_worker(spec: str | None = None) -> None:
    """Set up tracing in a worker process, after it started (each child of
    `greenq run -c N`, or the one process of -c 0). `spec` (default:
    $GREENQ_OTEL): "" nothing; "1" the SDK from OpenTelemetry's own
    variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
    OTEL_TRACES_EXPORTER: "otlp" by default, "console", or any exporter
    installed under that entry point group; OTEL_BSP_* for the batching);
    "module:function" call that function (no arguments) instead.
    Raises ValueError on a spec it cannot follow."""
    spec = os.environ.get(ENV, "") if spec is None else spec
    if not spec or spec == "0":
        return
    if ":" in spec:
        module, _, name = spec.partition(":")
        try:
            hook = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{ENV}={spec}: no function {name!r} in module {module!r} "
                             f"({exc})") from None
        hook()
        return
    if spec != "1":
        raise ValueError(f"{ENV} must be 1 or module:function, not {spec!r}")
    _sdk_from_env()


def _sdk_from_env() -> None:
    if not enabled:
        raise ValueError(f"{ENV}=1 needs the OpenTelemetry SDK: pip install 'greenq[otel]' "
                         "opentelemetry-sdk")
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.util._importlib_metadata import entry_points
    except ImportError:
        raise ValueError(f"{ENV}=1 needs the OpenTelemetry SDK: pip install opentelemetry-sdk") \
            from None
    provider = TracerProvider(resource=Resource.create())  # reads OTEL_SERVICE_NAME etc.
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name == "none":
            continue
        found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not found:
            raise ValueError(f"OTEL_TRACES_EXPORTER={name}: no such span exporter installed "
                             "(otlp: pip install opentelemetry-exporter-otlp)")
        provider.add_span_processor(BatchSpanProcessor(found[0].load()()))
    _trace.set_tracer_provider(provider)
    log.info("tracing: OpenTelemetry SDK set up, exporters %s", names)
