"""`greenq.current_job()`: the Job a task's code runs for, set by the worker
around each `perform` (a context variable: each greenlet has its own)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Optional

from .job import Job

running_job: ContextVar[Optional[Job]] = ContextVar("greenq_running_job", default=None)


def current_job() -> Job | None:
    """The running Job inside `perform` (its `fencing_token` included);
    None outside a job."""
    return running_job.get()
