"""What tracing costs: single submits per second and an in-process drain of
no-op jobs, in three modes, each in a fresh interpreter, alternated:

  off   the OpenTelemetry API hidden (the `otel` extra not installed)
  api   the API installed, no SDK set up (spans are no-ops)
  sdk   the SDK set up, batch processor, an exporter that drops every span

    python -m bench.tracing [--rounds 2] [--jobs 20000]

Each mode runs against its own throwaway redis-server; compare modes within
one round (the machine drifts between rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

MODES = ("off", "api", "sdk")


def set_up_sdk() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (BatchSpanProcessor, SpanExporter,
                                                SpanExportResult)

    class Drop(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)


def measure(mode: str, jobs: int) -> dict:
    """One mode's figures; runs in its own interpreter (see main)."""
    if mode == "off":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
    from gevent import monkey

    monkey.patch_all()
    import greenq
    from bench.redis_server import ThrowawayRedis
    from greenq import tracing

    assert tracing.enabled == (mode != "off"), mode
    if mode == "sdk":
        set_up_sdk()
    with ThrowawayRedis() as server, tempfile.TemporaryDirectory() as folder:
        tasks = os.path.join(folder, "noop_tasks.py")
        with open(tasks, "w") as file:
            file.write('id = "noop"\n\n\ndef perform(params):\n    return None\n')
        q = greenq.GreenQueue(server.url, namespace="t" + uuid.uuid4().hex[:6], worker_count=50)
        q.register_task(tasks)
        began = time.perf_counter()
        for _ in range(5000):
            q.submit_job("noop")
        single = 5000 / (time.perf_counter() - began)
        for start in range(5000, jobs, 1000):
            q.submit_jobs([{"task_id": "noop"}] * min(1000, jobs - start))
        began = time.perf_counter()
        q.start()
        while q.stats()["pending"] or q.stats()["active"]:
            time.sleep(0.005)
        drain = jobs / (time.perf_counter() - began)
        q.shutdown(timeout=5)
    return {"mode": mode, "single_submits_per_s": round(single), "drain_jobs_per_s": round(drain)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one child's run
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.jobs)))
        return
    for round_ in range(1, args.rounds + 1):
        order = MODES if round_ % 2 else MODES[::-1]
        for mode in order:
            out = subprocess.run([sys.executable, "-m", "bench.tracing", "--mode", mode,
                                  "--jobs", str(args.jobs)], capture_output=True, text=True,
                                 check=True).stdout
            print(f"round {round_} {out.strip()}", flush=True)


if __name__ == "__main__":
    main()
