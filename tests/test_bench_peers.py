"""bench.peers.compare --quick runs greenq's runner and one cheap peer (Huey,
in its own virtualenv, built on first use) on a throwaway redis-server and
writes positive figures for every workload of the shared schema. Figures are
measurements, not checks: no speed thresholds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMON_WORKLOADS = ("W1_submit_single", "W2_drain", "W3_efficiency",
                    "W4_latency_p50_ms", "W4_latency_p99_ms")
GREENQ_ONLY = ("W1_submit_bulk", "W2_drain_inprocess")


def assert_positive_figures(report: dict, workloads: tuple[str, ...]) -> None:
    for name in workloads:
        figure = report["workloads"][name]
        assert figure["runs"] and all(value > 0 for value in figure["runs"]), (name, figure)
        assert figure["min"] <= figure["median"] <= figure["max"], (name, figure)
        assert figure["min"] > 0, (name, figure)


@pytest.mark.timeout(600)
def test_quick_comparison_with_huey_writes_every_workload_for_both(tmp_path):
    out = tmp_path / "peers.json"
    env = {key: value for key, value in os.environ.items()
           if key not in ("GREENQ_REDIS_URL", "REDIS_URL")}
    # A subprocess: the comparison starts its own redis-server, runners and
    # worker processes, none of which belong under this test's monkey-patching.
    done = subprocess.run([sys.executable, "-m", "bench.peers.compare", "--quick", "--peers", "huey",
                           "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, done.stderr[-5000:]
    combined = json.loads(out.read_text())
    assert combined["quick"] is True
    assert combined["system"]["redis"] and combined["system"]["python"]
    greenq, huey = combined["libraries"]["greenq"], combined["libraries"]["huey"]
    assert "error" not in huey, huey
    assert greenq["library"] == "greenq" and huey["library"] == "huey"
    assert greenq["version"] and huey["version"]
    assert huey["system"]["packages"]["huey"] == huey["version"]
    assert_positive_figures(greenq, COMMON_WORKLOADS + GREENQ_ONLY)
    assert_positive_figures(huey, COMMON_WORKLOADS)
    assert "W1_submit_bulk" not in huey["workloads"]  # Huey has no bulk submit
    for name in COMMON_WORKLOADS:
        assert name in done.stdout
    assert "huey" in done.stdout and "greenq x" in done.stdout
