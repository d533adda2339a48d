"""One log line per job outcome, on the `greenq.jobs` logger, so an operator
sees a worker work (what Celery's "received" / "succeeded in" lines and
RQ's job lines show).

The process that ran the job logs it, once Redis acknowledged the outcome
(committer.py), so a line never reports an outcome that was fenced off or
not written:

    DEBUG    job <id> <task> resource=<r> attempt <n> started
    INFO     job <id> <task> resource=<r> attempt <n> succeeded in 0.031 s
    INFO     ... failed in 0.002 s; retrying, 2 retries left: ValueError: boom
    WARNING  ... failed in 0.002 s; no retries left, moved to the failed queue:
             <the traceback>
    INFO     ... given back to the queue after 3.000 s (shutting down)
    WARNING  ... found dead; retrying, 0 retries left: stale: process ... (a stale flush)

Why INFO: `greenq run` logs at INFO by default, so a new operator sees jobs
go through without asking, and under gunicorn greenq follows gunicorn's
`--log-level` (info by default, greenq/contrib/gunicorn.py), where these
lines sit beside its access log. A busy queue silences them alone with
`logging.getLogger("greenq.jobs").setLevel(logging.WARNING)` (worker
children inherit the setting) and keeps the failures, or with
`greenq run --log-level warning`. Callers check `enabled()` once per batch
of jobs, not per job: when the lines are off they cost nothing per job.
"""

from __future__ import annotations

import logging
from typing import Sequence

from .job import FETCH_ROW, Job, number, text
from .tracing import ids

log = logging.getLogger("greenq.jobs")

DEBUG, INFO, WARNING = logging.DEBUG, logging.INFO, logging.WARNING


def enabled(level: int) -> bool:
    return log.isEnabledFor(level)


def fields(job: Job) -> dict:
    """The job's fields a structured log line carries (greenq/logs.py)."""
    return _fields(job.id, job.task_id, job.resource_id, job.attempts, job.trace)


def _fields(job_id: str | None, task: str | None, resource: str | None, attempt: int,
            trace: str | None) -> dict:
    extra = {"job_id": job_id, "task": task, "resource": resource, "attempt": attempt}
    found = ids(trace)
    if found is not None:
        extra["trace_id"], extra["span_id"] = found
    return extra


def _took(job: Job) -> str:
    return "" if job.duration is None else f" in {job.duration:.3f} s"


def _last_line(error: str | None) -> str:
    lines = (error or "").strip().splitlines()
    return lines[-1] if lines else ""


def started(rows: Sequence) -> None:
    """DEBUG: the jobs of one fetch reply (flat rows, job.FETCH_ROW entries each)."""
    for start in range(0, len(rows), FETCH_ROW):
        job_id, task, resource = text(rows[start]), text(rows[start + 2]), text(rows[start + 3])
        attempt = number(rows[start + 7])
        log.debug("job %s %s resource=%s attempt %d started", job_id, task, resource, attempt,
                  extra=_fields(job_id, task, resource, attempt, text(rows[start + 9])))


def succeeded(job: Job) -> None:
    log.info("job %s %s resource=%s attempt %d succeeded%s", job.id, job.task_id,
             job.resource_id, job.attempts, _took(job), extra=fields(job))


def _left(retries: int) -> str:
    return f"{retries} {'retry' if retries == 1 else 'retries'} left"


def retrying(job: Job) -> None:
    """`job.retries`: what is left after this retry."""
    log.info("job %s %s resource=%s attempt %d failed%s; retrying, %s: %s", job.id, job.task_id,
             job.resource_id, job.attempts, _took(job), _left(job.retries), _last_line(job.error),
             extra=fields(job))


def failed(job: Job) -> None:
    log.warning("job %s %s resource=%s attempt %d failed%s; no retries left, moved to the "
                "failed queue:\n%s", job.id, job.task_id, job.resource_id, job.attempts,
                _took(job), (job.error or "").rstrip(), extra=fields(job))


def cancelled(job: Job) -> None:
    log.info("job %s %s resource=%s attempt %d cancelled%s", job.id, job.task_id,
             job.resource_id, job.attempts, _took(job), extra=fields(job))


def given_back(job: Job) -> None:
    log.info("job %s %s resource=%s attempt %d given back to the queue after %.3f s "
             "(shutting down)", job.id, job.task_id, job.resource_id, job.attempts,
             job.duration or 0.0, extra=fields(job))


def found_dead(job: Job, retried: bool) -> None:
    """A stale flush reclaimed `job` (logged by the process that ran the flush)."""
    then = f"retrying, {_left(job.retries)}" if retried else "moved to the failed queue"
    log.warning("job %s %s resource=%s attempt %d found dead; %s: %s", job.id, job.task_id,
                job.resource_id, job.attempts, then, _last_line(job.error), extra=fields(job))
