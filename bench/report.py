"""The figures of `python -m bench`: per-workload summaries in the shared
JSON schema (bench/peers/README.md), the issue's targets beside them, and
the printed table. Targets are shown, never asserted (except W5's
correctness counts, which bench/__main__ turns into the exit status).
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Callable

UNITS = {  # workload -> (unit, higher_is_better)
    "W1_submit_single": ("jobs/s", True),
    "W1_submit_bulk": ("jobs/s", True),
    "W2_drain": ("jobs/s", True),
    "W2_drain_inprocess": ("jobs/s", True),
    "W2_drain_result_ttl_0": ("jobs/s", True),
    "W2_ceiling_no_queue": ("jobs/s", True),
    "W2_share_of_ceiling": ("drain/ceiling", True),
    "W3_efficiency": ("ideal/measured", True),
    "W3_ceiling_no_queue": ("ideal/measured", True),
    "W4_latency_p50_ms": ("ms", False),
    "W4_latency_p99_ms": ("ms", False),
    "W4_latency_p50_ms_result_ttl_0": ("ms", False),
    "W4_latency_p99_ms_result_ttl_0": ("ms", False),
    "W5_resources_jobs_per_s": ("jobs/s", True),
    "W5_hot_jobs_per_s": ("jobs/s", True),
    "W5_overlaps": ("jobs", False),
    "W5_order_violations": ("jobs", False),
    "W6_round_trips_per_tick": ("round trips", False),
    "W6_redis_ms_per_tick": ("ms", False),
    "W6_rss_bytes_per_running_job": ("bytes", False),
    "W6_redis_bytes_per_queued_job": ("bytes", False),
    "W6_redis_bytes_per_kept_record": ("bytes", False),
    "W7_wake_p50_ms": ("ms", False),
    "W7_wake_p99_ms": ("ms", False),
    "W7_p99_over_W4_p99": ("ratio", False),
    "W6_redis_bytes_per_scheduled_job": ("bytes", False),
    "W6_redis_bytes_scheduled_over_queued": ("bytes", False),
    "W8_lateness_p50_ms": ("ms", False),
    "W8_lateness_p99_ms": ("ms", False),
    "W8_lateness_max_ms": ("ms", False),
    "W9_rate_limited_jobs_per_s": ("jobs/s", True),
    "W9_share_of_limit": ("steady/limit", True),
    "W9_most_starts_in_a_period": ("starts", False),
    "W9_starts_over_limit": ("starts", False),
    "W8_p99_over_W4_p99": ("ratio", False),
    "W10_drain_cluster": ("jobs/s", True),
    "W10_drain_single": ("jobs/s", True),
    "W10_redis_usec_per_job_cluster": ("usec", False),
    "W10_redis_usec_per_job_single": ("usec", False),
    "W10_redis_cpu_cluster_over_single": ("ratio", False),
    "W10_busiest_over_least_busy_master": ("ratio", False),
    "W10_round_trips_per_job_cluster": ("round trips", False),
    "W10_round_trips_per_job_single": ("round trips", False),
}

# The figures each workload group produces, in table order.
GROUPS = {
    "W1": ["W1_submit_single", "W1_submit_bulk"],
    "W2": ["W2_drain", "W2_drain_result_ttl_0", "W2_drain_inprocess", "W2_ceiling_no_queue",
           "W2_share_of_ceiling"],
    "W3": ["W3_efficiency", "W3_ceiling_no_queue"],
    "W4": ["W4_latency_p50_ms", "W4_latency_p99_ms", "W4_latency_p50_ms_result_ttl_0",
           "W4_latency_p99_ms_result_ttl_0"],
    "W5": ["W5_resources_jobs_per_s", "W5_hot_jobs_per_s", "W5_overlaps", "W5_order_violations"],
    "W6": ["W6_round_trips_per_tick", "W6_redis_ms_per_tick", "W6_rss_bytes_per_running_job",
           "W6_redis_bytes_per_queued_job", "W6_redis_bytes_per_kept_record",
           "W6_redis_bytes_per_scheduled_job", "W6_redis_bytes_scheduled_over_queued"],
    "W7": ["W7_wake_p50_ms", "W7_wake_p99_ms"],
    "W8": ["W8_lateness_p50_ms", "W8_lateness_p99_ms", "W8_lateness_max_ms"],
    "W9": ["W9_rate_limited_jobs_per_s", "W9_share_of_limit", "W9_most_starts_in_a_period",
           "W9_starts_over_limit"],
    "W10": ["W10_drain_cluster", "W10_drain_single", "W10_redis_usec_per_job_cluster",
            "W10_redis_usec_per_job_single", "W10_redis_cpu_cluster_over_single",
            "W10_busiest_over_least_busy_master", "W10_round_trips_per_job_cluster",
            "W10_round_trips_per_job_single"],
}

# Figures computed from two groups of one run, when both ran: name ->
# (numerator, denominator), run by run.
RATIOS = {"W7_p99_over_W4_p99": ("W7_wake_p99_ms", "W4_latency_p99_ms"),
          "W8_p99_over_W4_p99": ("W8_lateness_p99_ms", "W4_latency_p99_ms")}

# Figures that are correctness checks: any non-zero run fails the benchmark.
MUST_BE_ZERO = ("W5_overlaps", "W5_order_violations", "W9_starts_over_limit")


@dataclasses.dataclass(frozen=True)
class Target:
    text: str
    met: Callable[[float], bool] | None = None


# From the performance issue. Where a target is relative to the best peer,
# the peer figure is the one the issue quotes (2 cores, Redis 7.0);
# `python -m bench.peers.compare` measures the real ratio in one run.
TARGETS = {
    "W1_submit_single": Target(">= 2x best peer (issue: Huey 6,800 -> 13,600)", lambda v: v >= 13_600),
    "W1_submit_bulk": Target(">= 100,000", lambda v: v >= 100_000),
    "W2_drain": Target(">= 10x best peer (issue: Dramatiq 5,500 -> 55,000)", lambda v: v >= 55_000),
    "W3_efficiency": Target(">= 0.95", lambda v: v >= 0.95),
    "W4_latency_p50_ms": Target("< best peer (issue: Huey 0.42)", lambda v: v < 0.42),
    "W4_latency_p99_ms": Target("< best peer (issue: Huey 0.98)", lambda v: v < 0.98),
    "W5_overlaps": Target("0 (checked)", lambda v: v == 0),
    "W5_order_violations": Target("0 (checked)", lambda v: v == 0),
    "W6_round_trips_per_tick": Target("1 whatever the job count", lambda v: v <= 1.0),
    "W6_redis_ms_per_tick": Target("<= 5 for 10,000 jobs", lambda v: v <= 5.0),
    "W6_rss_bytes_per_running_job": Target("<= 20 KB", lambda v: v <= 20 * 1024),
    "W6_redis_bytes_per_queued_job": Target("<= 200 besides params", lambda v: v <= 200),
    "W7_wake_p99_ms": Target("<= 2x W4 p99 of the same run (ratio below)"),
    "W7_p99_over_W4_p99": Target("<= 2", lambda v: v <= 2.0),
    "W6_redis_bytes_scheduled_over_queued": Target("<= 64", lambda v: v <= 64),
    "W8_lateness_p99_ms": Target("<= 2x W4 p99 of the same run (ratio below)"),
    "W8_p99_over_W4_p99": Target("<= 2", lambda v: v <= 2.0),
    "W9_rate_limited_jobs_per_s": Target("within 5% of 1,000, never above",
                                         lambda v: 950 <= v <= 1000),
    "W9_share_of_limit": Target("0.95-1", lambda v: 0.95 <= v <= 1.0),
    "W9_most_starts_in_a_period": Target("<= 1,000 (the limit)", lambda v: v <= 1000),
    "W9_starts_over_limit": Target("0 (checked)", lambda v: v == 0),
    "W10_redis_cpu_cluster_over_single": Target("<= 1.15", lambda v: v <= 1.15),
    "W10_busiest_over_least_busy_master": Target("<= 1.5", lambda v: v <= 1.5),
    "W10_round_trips_per_job_cluster": Target("<= single node's (below)"),
}


def summary(name: str, runs: list[float]) -> dict:
    unit, higher_is_better = UNITS[name]
    return {"unit": unit, "higher_is_better": higher_is_better, "runs": runs,
            "median": statistics.median(runs), "min": min(runs), "max": max(runs)}


def ratios(results: dict[str, list[float]]) -> dict[str, list[float]]:
    """The RATIOS whose two figures were measured in this run, run by run."""
    derived = {}
    for name, (top, bottom) in RATIOS.items():
        if top in results and bottom in results and len(results[top]) == len(results[bottom]):
            derived[name] = [a / b for a, b in zip(results[top], results[bottom])]
    return derived


def failed_checks(workloads: dict) -> list[str]:
    """Correctness figures that were not zero in some run."""
    return [name for name in MUST_BE_ZERO
            if name in workloads and any(run != 0 for run in workloads[name]["runs"])]


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def verdict(name: str, median: float) -> str:
    target = TARGETS.get(name)
    if target is None or target.met is None:
        return ""
    return "ok" if target.met(median) else "MISSED"


def table(report: dict, runs: int) -> str:
    system = report["system"]
    packages = ", ".join(f"{name} {version}" for name, version in system["packages"].items() if version)
    lines = [
        f"greenq {report['version']} benchmark ({'--quick, ' if report['quick'] else ''}"
        f"{runs} run{'s' if runs != 1 else ''} per workload, median and min-max)",
        f"{system['machine']}, {system['cpu']}, Python {system['python']}, Redis {system['redis']}",
        packages,
        "",
    ]
    header = ("workload", "median", "min-max", "unit", "target", "")
    rows = [header]
    for name, figure in report["workloads"].items():
        target = TARGETS.get(name)
        rows.append((name, fmt(figure["median"]), f"{fmt(figure['min'])}-{fmt(figure['max'])}",
                     figure["unit"], target.text if target else "", verdict(name, figure["median"])))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    aligns = ("<", ">", ">", "<", "<", "<")
    for row in rows:
        lines.append("  ".join(f"{cell:{align}{width}}" for cell, align, width
                               in zip(row, aligns, widths)).rstrip())
    for name, error in report.get("errors", {}).items():
        lines.append(f"{name}: FAILED: {error}")
    return "\n".join(lines)
