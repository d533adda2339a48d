"""Tasks for the tracing tests, and `setup_tracing`, the hook a worker
process calls through $GREENQ_OTEL (otel_tasks:setup_tracing): it writes
each finished span as one JSON line to $GREENQ_TEST_SPANS.<pid>."""
import os

import gevent

import greenq


@greenq.task("otel.ok")
def ok(params):
    return {"echo": params}


@greenq.task("otel.fail")
def fail(params):
    raise ValueError("asked to fail")


# A short timeout: the heartbeat ticks every timeout / 4 (0.1 s).
@greenq.task("otel.wait", timeout=0.4)
def wait(params):
    gevent.sleep(params["seconds"])


def setup_tracing():
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    out = open(f"{os.environ['GREENQ_TEST_SPANS']}.{os.getpid()}", "a", buffering=1)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
        out=out, formatter=lambda span: span.to_json(indent=None) + "\n")))
    trace.set_tracer_provider(provider)
