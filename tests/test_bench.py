"""The benchmark suite (`python -m bench`) and its per-job cost profile
(`python -m bench.core`) run end to end in --quick mode and write their
figures. Figures are measurements: no speed thresholds. W5's correctness
counts (overlapping or out-of-order jobs of one resource) must be zero."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import report  # noqa: E402

MUST_BE_ZERO = ("W5_overlaps", "W5_order_violations", "W9_starts_over_limit")
# Whole milliseconds on Redis' clock: a delayed job started within its due
# millisecond is 0 ms late. A scheduled job's bytes over a queued one's are
# a difference of two measurements.
MAY_BE_ZERO = ("W8_lateness_p50_ms", "W8_lateness_p99_ms", "W8_lateness_max_ms",
               "W8_p99_over_W4_p99")
MAY_BE_NEGATIVE = ("W6_redis_bytes_scheduled_over_queued",)


def run_bench(*args: str, timeout: float = 280) -> subprocess.CompletedProcess:
    # A subprocess: the bench patches gevent itself, starts its own
    # redis-server and worker children; none of it belongs under pytest.
    env = {key: value for key, value in os.environ.items()
           if key not in ("GREENQ_REDIS_URL", "REDIS_URL")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(300)
def test_quick_suite_writes_every_workload_of_the_schema_with_positive_figures(tmp_path):
    out = tmp_path / "bench.json"
    done = run_bench("-m", "bench", "--quick", "--json", str(out))
    assert done.returncode == 0, done.stderr[-5000:]
    result = json.loads(out.read_text())
    assert result["library"] == "greenq"
    assert result["version"] == result["system"]["packages"]["greenq"]
    assert result["quick"] is True
    assert result["errors"] == {}
    system = result["system"]
    assert system["machine"] and system["cpu"] and system["python"] and system["redis"]
    assert system["packages"]["gevent"] and system["packages"]["redis"]
    every = [name for names in report.GROUPS.values() for name in names] + list(report.RATIOS)
    assert sorted(result["workloads"]) == sorted(every)
    for name, figure in result["workloads"].items():
        assert set(figure) >= {"unit", "higher_is_better", "runs", "median", "min", "max"}, name
        assert len(figure["runs"]) == 1, (name, figure)
        if name in MUST_BE_ZERO:
            assert figure["runs"] == [0], (name, figure)
        elif name in MAY_BE_ZERO:
            assert figure["runs"][0] >= 0, (name, figure)
        elif name not in MAY_BE_NEGATIVE:
            assert figure["runs"][0] > 0, (name, figure)
        assert figure["min"] <= figure["median"] <= figure["max"], (name, figure)
        assert name in done.stdout
    # One tick carries the heartbeat of every running job, however many.
    assert result["workloads"]["W6_round_trips_per_tick"]["median"] == 1.0


@pytest.mark.timeout(300)
def test_suite_on_a_given_redis_deletes_its_own_keys_and_touches_no_other(redis_server, r):
    r.set("someone-else:key", "kept")
    r.rpush("someone-else:list", "a", "b")
    keys_before = set(r.keys("*"))
    # Earlier tests' ended jobs are kept for a while (result_ttl, a waiter's
    # grace): those may expire meanwhile, nothing else may change.
    expiring = {key for key in keys_before if r.pttl(key) > 0}
    done = run_bench("-m", "bench", "--quick", "--workloads", "W1,W5", "--redis-url", redis_server.url)
    assert done.returncode == 0, done.stderr[-5000:]
    keys_after = set(r.keys("*"))
    assert keys_after <= keys_before
    # Keys that went away meanwhile are earlier tests' (namespaces "t<hex>";
    # the bench's own start with "b"): records expiring, or ended by a
    # worker process of theirs that was still stopping.
    assert all(key.startswith(b"t") for key in keys_before - keys_after - expiring)
    assert r.get("someone-else:key") == b"kept"
    assert r.lrange("someone-else:list", 0, -1) == [b"a", b"b"]
    for name in ("W1_submit_single", "W1_submit_bulk", "W5_resources_jobs_per_s", "W5_overlaps"):
        assert name in done.stdout


@pytest.mark.timeout(120)
def test_script_cost_leases_and_finishes_every_job_and_reports_both_scripts():
    done = run_bench("-m", "bench.script_cost", "--jobs", "300", "--rounds", "2", timeout=100)
    assert done.returncode == 0, done.stderr[-5000:]
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["round 1", "round 2"]
    for line in lines:
        figures = [float(word) for word in line.replace(",", " ").split() if word.replace(".", "").isdigit()]
        fetch, complete, together = figures[-3:]
        assert fetch > 0 and complete > 0 and together == pytest.approx(fetch + complete, abs=0.011)


@pytest.mark.timeout(200)
def test_w7_times_wait_wake_ups_and_reports_its_p99_over_w4s_of_the_same_run(tmp_path):
    out = tmp_path / "bench.json"
    done = run_bench("-m", "bench", "--quick", "--runs", "2", "--workloads", "W4,W7",
                     "--json", str(out), timeout=180)
    assert done.returncode == 0, done.stderr[-5000:]
    figures = json.loads(out.read_text())["workloads"]
    assert list(figures) == [*report.GROUPS["W4"], "W7_wake_p50_ms", "W7_wake_p99_ms",
                             "W7_p99_over_W4_p99"]
    w7_p50, w7_p99 = figures["W7_wake_p50_ms"]["runs"], figures["W7_wake_p99_ms"]["runs"]
    assert len(w7_p50) == 2 and all(0 < p50 <= p99 for p50, p99 in zip(w7_p50, w7_p99))
    # the ratio is taken run by run, within one run of both workloads
    ratios = [w7 / w4 for w7, w4 in zip(w7_p99, figures["W4_latency_p99_ms"]["runs"])]
    assert figures["W7_p99_over_W4_p99"]["runs"] == pytest.approx(ratios)
    assert figures["W7_p99_over_W4_p99"]["unit"] == "ratio"
    for name in ("W7_wake_p50_ms", "W7_wake_p99_ms", "W7_p99_over_W4_p99"):
        assert name in done.stdout


@pytest.mark.timeout(200)
def test_w7_alone_has_no_ratio(tmp_path):
    out = tmp_path / "bench.json"
    done = run_bench("-m", "bench", "--quick", "--workloads", "W7", "--json", str(out),
                     timeout=180)
    assert done.returncode == 0, done.stderr[-5000:]
    assert list(json.loads(out.read_text())["workloads"]) == ["W7_wake_p50_ms", "W7_wake_p99_ms"]


def test_unknown_workload_is_a_usage_error():
    done = run_bench("-m", "bench", "--workloads", "W1,W99", timeout=60)
    assert done.returncode == 2
    assert "W99" in done.stderr


@pytest.mark.timeout(200)
def test_core_profile_writes_positive_costs_per_job(tmp_path):
    out = tmp_path / "core.json"
    done = run_bench("-m", "bench.core", "--quick", "--task", "job", "--json", str(out), timeout=180)
    assert done.returncode == 0, done.stderr[-5000:]
    costs = json.loads(out.read_text())
    assert costs["jobs"] == 500 and costs["task"] == "job"
    for name in ("jobs_per_s", "wall_us_per_job", "python_cpu_us_per_job", "redis_cpu_us_per_job",
                 "round_trips_per_job", "commands_per_job"):
        assert costs[name] > 0, (name, costs)
    # Every job's own record is one pipeline, and fetching and committing
    # run scripts: both show in the breakdown.
    by_first = costs["round_trips_by_first_command"]
    assert any(name.startswith("evalsha fetch") for name in by_first), by_first
    assert any(name.startswith("evalsha complete") for name in by_first), by_first
    assert costs["calls_per_job_by_command"]["incrby"] >= 1.0  # redis-py's INCR is INCRBY 1
    assert "round trips per job" in done.stdout


@pytest.mark.timeout(200)
def test_w8_and_w9_time_delayed_and_rate_limited_jobs_by_redis_clock(tmp_path):
    out = tmp_path / "bench.json"
    done = run_bench("-m", "bench", "--quick", "--workloads", "W4,W8,W9", "--json", str(out),
                     timeout=180)
    assert done.returncode == 0, done.stderr[-5000:]
    figures = json.loads(out.read_text())["workloads"]
    assert list(figures) == [*report.GROUPS["W4"], *report.GROUPS["W8"], *report.GROUPS["W9"],
                             "W8_p99_over_W4_p99"]
    p50, p99, most = (figures[f"W8_lateness_{name}_ms"]["runs"][0] for name in ("p50", "p99", "max"))
    assert 0 <= p50 <= p99 <= most  # no job started before its due time (W8 checks each)
    assert figures["W8_p99_over_W4_p99"]["runs"] == pytest.approx(
        [p99 / figures["W4_latency_p99_ms"]["runs"][0]])
    rate = figures["W9_rate_limited_jobs_per_s"]["runs"][0]
    assert figures["W9_share_of_limit"]["runs"] == pytest.approx([rate / 1000])
    # A correctness figure, not a speed: the limit holds in every window.
    assert 0 < figures["W9_most_starts_in_a_period"]["runs"][0] <= 1000
    assert figures["W9_starts_over_limit"]["runs"] == [0]
    for name in figures:
        assert name in done.stdout


def test_w9_windows_and_steady_rate_are_counted_on_sorted_start_times():
    from bench import timing

    # 3 starts in [0, 1000), the 4th at 1000 opens a new window.
    assert timing.most_in_window([0, 10, 999, 1000, 1005], 1000) == 4
    assert timing.most_in_window([0, 1000, 2000], 1000) == 1
    # past the first 2 (the burst), 3 starts 500 ms apart: 2 intervals in 1 s
    assert timing.steady_rate([0, 0, 1000, 1500, 2000], 2) == pytest.approx(2.0)
