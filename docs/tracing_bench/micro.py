"""Per-call cost of tracing.perform and tracing.send. usage: python micro.py api|sdk"""
import sys
from gevent import monkey; monkey.patch_all()
import time
from greenq import tracing
from greenq.job import Job
mode = sys.argv[1]
if mode == "sdk":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    class Drop(SpanExporter):
        def export(self, spans): return SpanExportResult.SUCCESS
    p = TracerProvider(); p.add_span_processor(BatchSpanProcessor(Drop())); trace.set_tracer_provider(p)
job = Job("abc", "t", "r", None, 0, 1, token="5", trace="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
n = 20000
t = time.perf_counter()
for _ in range(n):
    job.trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    tracing.perform(lambda p: None, job, "q")
print(mode, "perform us/job", (time.perf_counter() - t) / n * 1e6)
t = time.perf_counter()
for _ in range(n):
    row = ["id", "t", "r"]
    with tracing.send("q", [row]): pass
print(mode, "send us/call", (time.perf_counter() - t) / n * 1e6)
