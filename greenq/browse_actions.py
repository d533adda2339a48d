"""The dashboard's detail view, tallies and actions (re-exported by
greenq/browse.py): one job in full, counts over a filtered view (walked in
bounded script calls), and retry, delete and cancel of single jobs or of a
filtered set, through the queue's own calls and scripts."""

from __future__ import annotations

import logging
from typing import Any, Iterable

from . import failed as failed_queue
from . import metrics
from .broker import Broker
from .errors import JobDecodeError
from .job import text

log = logging.getLogger(__name__)

SCAN_PER_CALL = 10_000       # slots one tally call walks: a few ms of Redis time
MAX_TASKS = 200              # failed_tasks(): distinct task ids at most
CANCEL_CHUNK = 500           # ids a bulk cancel reads at a time
VIEWS = ("pending", "scheduled", "failed")
HIDDEN = {b"params", b"result", b"raw"}  # shown decoded (params, result) or not at all


def _check_view(view: Any, allowed: Iterable[str] = VIEWS) -> str:
    allowed = tuple(allowed)
    if view not in allowed:
        raise ValueError(f"view must be one of {', '.join(allowed)}, not {view!r}")
    return view


def _check_task(task: Any) -> str:
    if task is None:
        return ""
    if not isinstance(task, str) or not task:
        raise ValueError(f"task must be None or a non-empty str, not {task!r}")
    return task


def _view_keys(broker: Broker, view: str) -> list[tuple[str, str]]:
    k = broker.keys
    return {"pending": [(k.handoff, "list"), (k.pending, "list")],
            "scheduled": [(k.delayed, "zset")], "failed": [(k.failed, "list")]}[view]


def _tally(broker: Broker, key: str, kind: str, task: str, skip_cancelled: bool) -> int:
    """How many ids of `key` name `task`: browse_tally.lua over the whole
    key, SCAN_PER_CALL slots per call."""
    matched, pos = 0, 0
    while True:
        found, new_pos, size = broker.browse(
            "tally", (key,), (broker.keys.prefix, kind, pos, SCAN_PER_CALL, task,
                              "1" if skip_cancelled else "0"))
        matched += found
        if new_pos >= size or new_pos == pos:  # the end (or the key shrank under the walk)
            return matched
        pos = new_pos


def counts(queue: Any) -> dict[str, int]:
    """Jobs by state, live workers: the queue's stats()."""
    return queue.stats()


def failed_tasks(queue: Any) -> list[str]:
    """Task ids that ever had a job fail for good, at most MAX_TASKS, sorted:
    the failed-list filter's choices. From the outcome counters
    (greenq/metrics.py: one small hash per partition) rather than from the
    failed list, whose tasks only a walk of the list could tell (150 ms
    for the newest 50,000). A task whose failed jobs were all retried or
    deleted since is still offered; its filter shows an empty list."""
    return sorted(task for task, figures in metrics.task_figures(queue).items()
                  if task and figures.outcomes["failed"])[:MAX_TASKS]


def count_matching(queue: Any, view: str, task: str | None = None) -> int:
    """How many jobs a bulk action on `view` (of `task`) would act on now.
    Without a task, the counters (stats()); with one, a walk of the view's
    lists in bounded calls."""
    view, task = _check_view(view), _check_task(task)
    if not task:
        return queue.stats()[view]
    return sum(_tally(broker, key, kind, task, view != "failed")
               for broker in queue.brokers for key, kind in _view_keys(broker, view))


def job(queue: Any, job_id: str) -> dict | None:
    """One job in full: its Job attributes (params and result as repr
    text) and every other field of its record, decoded; None when unknown."""
    try:
        found = queue.get_job(job_id)
    except JobDecodeError as exc:
        return {"id": job_id, "state": None, "problem": str(exc)}
    if found is None:
        return None
    partitions = queue._partition_set()
    record = partitions.record(job_id)
    fields = {text(name): text(value) for name, value in record.items() if name not in HIDDEN}
    return {"id": found.id, "task": found.task_id, "resource": found.resource_id,
            "state": found.state, "attempts": found.attempts, "retries": found.retries,
            "error": found.error, "lease": found.token or None,
            "process": fields.get("owner"), "started_ms": _ms(fields.get("started")),
            "ended_ms": _ms(fields.get("ended")),
            "params": repr(found.params), "result": None if b"result" not in record
            else repr(found.result),
            "partition": partitions.of(found.resource_id, found.id), "record": fields}


def _ms(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


# -- actions ---------------------------------------------------------------------

def retry(queue: Any, job_ids: Iterable[str]) -> int:
    """Retry the failed jobs of `job_ids` (others are left alone)."""
    return queue.retry_failed_jobs(job_ids=job_ids)


def delete(queue: Any, job_ids: Iterable[str]) -> int:
    """Delete the failed jobs of `job_ids`, records included."""
    return queue.delete_failed_jobs(job_ids=job_ids)


def cancel(queue: Any, job_ids: Iterable[str]) -> int:
    """Cancel each job of `job_ids` that has not ended (a running one: under way)."""
    ids, _ = failed_queue.check_filters(job_ids, None)
    return sum(queue.cancel(job_id) for job_id in ids or ())


def retry_all_failed(queue: Any, task: str | None = None) -> int:
    return queue.retry_failed_jobs(task_id=_check_task(task) or None)


def delete_all_failed(queue: Any, task: str | None = None) -> int:
    return queue.delete_failed_jobs(task_id=_check_task(task) or None)


def cancel_all(queue: Any, view: str, task: str | None = None) -> int:
    """Cancel every job of `view` ("pending" or "scheduled"), of `task` if
    given. Pending lists are read from their left end (new jobs come in
    there, runs leave from the right), so a cancelled id, which stays in
    place, does not shift what is left to read; a cancelled scheduled job
    leaves its set, and the walk steps back by as many."""
    view, task = _check_view(view, ("pending", "scheduled")), _check_task(task)
    acted = 0
    for broker in queue.brokers:
        for key, kind in _view_keys(broker, view):
            pos = 0
            while True:
                rows, new_pos, size, done = broker.browse(
                    "page", (key,), (broker.keys.prefix + "job:", kind, "left", pos, CANCEL_CHUNK,
                                     CANCEL_CHUNK * 20, task, "1", "task", "state"))
                ids = [text(rows[i]) or "" for i in range(0, len(rows), 4)]
                # This partition's cancel.lua (queue.cancel would ask every
                # partition), one round trip per chunk.
                cancelled = sum(broker.cancel_many(ids))
                acted += cancelled
                pos = new_pos - (cancelled if kind == "zset" else 0)
                if done:
                    break
    log.info("cancelled %d %s jobs%s", acted, view, f" of task {task}" if task else "")
    return acted
