"""bench.core --quick runs end to end and writes its figures (no speed thresholds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RESULTS = ("submit_job_jobs_per_s", "submit_jobs_jobs_per_s", "drain_jobs_per_s",
           "latency_p50_ms", "latency_p99_ms", "redis_round_trips_per_job",
           "redis_commands_per_job")


@pytest.mark.timeout(180)
def test_quick_bench_exits_zero_and_writes_positive_figures_with_versions(tmp_path):
    out = tmp_path / "bench.json"
    env = {key: value for key, value in os.environ.items()
           if key not in ("GREENQ_REDIS_URL", "REDIS_URL")}
    done = subprocess.run([sys.executable, "-m", "bench.core", "--quick", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr
    assert "drain" in done.stdout
    report = json.loads(out.read_text())
    for key in RESULTS:
        value = report["results"][key]
        assert isinstance(value, (int, float)) and value > 0, (key, value)
    assert report["config"]["quick"] is True
    assert report["config"]["own_redis"] is True
    environment = report["environment"]
    assert environment["python"]["version"]
    assert environment["redis"]["version"]
    assert environment["machine"]["cpu_count"]
    assert environment["libraries"]["greenq"]
    assert environment["libraries"]["gevent"]
