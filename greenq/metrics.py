"""The metrics the scripts count in Redis (scripts/include/metrics.lua), read
back for Prometheus and for the dashboard's charts. Nothing is kept here:
each read comes from Redis, so every process's work is in it and a restart
of any process, this one included, loses nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from . import config

if TYPE_CHECKING:
    from .queue import GreenQueue

OUTCOMES = ("succeeded", "failed", "retried", "cancelled")
_KINDS = {b"d": "duration", b"w": "wait"}


class TaskFigures:
    """One task's counters and histograms, summed over the partitions."""

    __slots__ = ("outcomes", "buckets", "sums")

    def __init__(self) -> None:
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        # kind -> observations per bucket (not cumulative; the last is +Inf)
        self.buckets = {kind: [0] * (len(config.HISTOGRAM_BOUNDS) + 1) for kind in _KINDS.values()}
        self.sums = dict.fromkeys(_KINDS.values(), 0)  # microseconds

    def add(self, kind: bytes, what: bytes, value: int) -> None:
        if kind == b"o":
            outcome = what.decode()
            if outcome in self.outcomes:
                self.outcomes[outcome] += value
        elif kind in _KINDS:
            name = _KINDS[kind]
            if what == b"sum":
                self.sums[name] += value
            elif what.isdigit() and 1 <= int(what) <= len(self.buckets[name]):
                self.buckets[name][int(what) - 1] += value


def task_figures(queue: GreenQueue) -> dict[str, TaskFigures]:
    """Every task's figures, by task id ("" for jobs whose record named none),
    one round trip per Redis node. A field that is not greenq's is skipped."""
    figures: dict[str, TaskFigures] = {}
    for fields in queue._partition_set().metrics_hashes():
        for field, raw in fields.items():
            parts = field.split(b"\t", 2)
            if len(parts) != 3:
                continue
            try:
                value = int(raw)
            except ValueError:
                continue
            task = parts[2].decode(errors="replace")
            figures.setdefault(task, TaskFigures()).add(parts[0], parts[1], value)
    return figures


def outcome_totals(queue: GreenQueue) -> dict[str, int]:
    """Jobs by outcome since the queue's first, all tasks together."""
    totals = dict.fromkeys(OUTCOMES, 0)
    for figures in task_figures(queue).values():
        for outcome, count in figures.outcomes.items():
            totals[outcome] += count
    return totals


def history(queue: GreenQueue, minutes: int = 60) -> list[dict[str, int]]:
    """Jobs by outcome in each of the last `minutes` minutes (Redis' clock),
    oldest first, the current minute last: {"minute": its start, epoch
    seconds, "succeeded", "failed", "retried", "cancelled"}. At most
    config.HISTORY_MINUTES back."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) \
            or not 1 <= minutes <= config.HISTORY_MINUTES:
        raise ValueError(f"minutes must be an int from 1 to {config.HISTORY_MINUTES}, "
                         f"not {minutes!r}")
    now_minute = queue.broker.redis_now_ms() // 60000
    wanted = range(now_minute - minutes + 1, now_minute + 1)
    fields = [f"{letter}{minute % config.HISTORY_MINUTES}"
              for minute in wanted for letter in "msfrc"]
    rows = [{"minute": minute * 60, **dict.fromkeys(OUTCOMES, 0)} for minute in wanted]
    for values in queue._partition_set().history_slots(fields):
        for index, row in enumerate(rows):
            held, *counts = values[5 * index:5 * index + 5]
            if held is None or int(held) != row["minute"] // 60:
                continue  # the slot still holds an older minute: nothing in this one
            for outcome, count in zip(OUTCOMES, counts):
                row[outcome] += int(count or 0)
    return rows


class QueueCollector:
    """A prometheus_client collector reading one queue at each scrape."""

    def __init__(self, queue: GreenQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[Any]:
        name = self.queue.queue_id
        jobs = CounterMetricFamily("greenq_jobs", "Jobs that ended, or were retried, by outcome",
                                   labels=["queue", "task", "outcome"])
        histograms = {
            "duration": HistogramMetricFamily(
                "greenq_job_duration_seconds", "How long perform ran, per run",
                labels=["queue", "task"]),
            "wait": HistogramMetricFamily(
                "greenq_job_wait_seconds",
                "How long a run's job waited from queued (submit, due time or retry) to started",
                labels=["queue", "task"]),
        }
        for task, figures in sorted(task_figures(self.queue).items()):
            for outcome, count in figures.outcomes.items():
                jobs.add_metric([name, task, outcome], count)
            for kind, family in histograms.items():
                counts = figures.buckets[kind]
                if not any(counts):
                    continue
                cumulative, buckets = 0, []
                for bound, count in zip((*config.HISTOGRAM_BOUNDS, float("inf")), counts):
                    cumulative += count
                    buckets.append((_le(bound), cumulative))
                family.add_metric([name, task], buckets, figures.sums[kind] / 1_000_000)
        states = GaugeMetricFamily("greenq_queue_jobs", "Jobs in the queue now, by state",
                                   labels=["queue", "state"])
        stats = self.queue.stats()
        for state in ("pending", "active", "waiting", "scheduled", "failed"):
            states.add_metric([name, state], stats.get(state, 0))
        workers = GaugeMetricFamily("greenq_workers", "Live worker processes", labels=["queue"])
        workers.add_metric([name], stats.get("workers", 0))
        locked = GaugeMetricFamily("greenq_locked_resources", "Resources a job holds now",
                                   labels=["queue"])
        locked.add_metric([name], stats.get("locked_resources", 0))
        yield jobs
        yield from histograms.values()
        yield from (states, workers, locked)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def render(queue: GreenQueue) -> tuple[bytes, str]:
    """The queue's metrics in Prometheus' text format, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(queue))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
