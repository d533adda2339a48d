"""The Job record handed to tasks' events, and its decoding from script replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import JobDecodeError
from .serializers import decode_params

# Entries per job in the flat replies of fetch.lua and flush_stale.lua.
ROW = 9


@dataclass(slots=True)
class Job:
    """One job: what was submitted, plus how its runs went so far."""

    id: str
    task_id: str
    resource_id: str | None
    params: Any
    retries: int          # retries left
    attempts: int         # runs started, crashes included
    error: str | None = None
    token: str = field(default="", repr=False)  # lease of the current run
    # Seconds `perform` ran, in the process that ran it (None: it did not run).
    duration: float | None = field(default=None, repr=False, compare=False)


def text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", "replace")


def number(value: bytes | int | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def decode_row(row: Sequence[Any], max_params_bytes: int) -> Job:
    """Build a Job from one fetch/flush row: id, token-or-outcome, task,
    resource, encoding, params, retries, attempts, error.

    Raises JobDecodeError when the params cannot be decoded; `exc.job` then
    holds a Job with ``params=None`` so the caller can still fail it.
    """
    job = Job(
        id=text(row[0]) or "",
        task_id=text(row[2]) or "",
        resource_id=text(row[3]),
        params=None,
        retries=number(row[6]),
        attempts=number(row[7]),
        error=text(row[8]),
        token=str(row[1]) if isinstance(row[1], int) else text(row[1]) or "",
    )
    try:
        job.params = decode_params(row[4], row[5], max_params_bytes)
    except JobDecodeError as exc:
        exc.job = job
        raise
    return job
