"""Cost of tracing: submit_job calls/s and drain jobs/s, in three modes.
usage: python bench_tracing.py MODE   (off | api | sdk)"""
import sys
mode = sys.argv[1]
if mode == "off":
    sys.modules["opentelemetry"] = None
from gevent import monkey; monkey.patch_all()
import os, time, uuid
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
from redis_server import RedisServer
import greenq
from greenq import tracing
assert tracing.enabled == (mode != "off")
if mode == "sdk":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    class Drop(SpanExporter):
        def export(self, spans): return SpanExportResult.SUCCESS
    p = TracerProvider(); p.add_span_processor(BatchSpanProcessor(Drop())); trace.set_tracer_provider(p)
N = int(os.environ.get("N", "20000"))
srv = RedisServer().start()
tasks = os.path.join(os.environ.get("TMPDIR", "/tmp"), "greenq_noop_tasks.py")
open(tasks, "w").write('id = "noop"\ndef perform(params):\n    return None\n')
q = greenq.GreenQueue(srv.url, namespace="b" + uuid.uuid4().hex[:6], worker_count=50)
q.register_task(tasks)
t = time.perf_counter()
for i in range(5000):
    q.submit_job("noop")
single = 5000 / (time.perf_counter() - t)
q.submit_jobs([{"task_id": "noop"} for _ in range(N - 5000)])
t = time.perf_counter()
q.start()
while True:
    s = q.stats()
    if s["pending"] == 0 and s["active"] == 0:
        break
    time.sleep(0.005)
drain = N / (time.perf_counter() - t)
q.shutdown(timeout=5)
srv.close()
print(f"{mode} single_submit/s={single:.0f} drain_jobs/s={drain:.0f}")
