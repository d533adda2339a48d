"""The Job record handed to tasks' events, and its decoding from script
replies and from the record in Redis (get_job, wait, failed_jobs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import JobDecodeError
from .serializers import decode_params

# Entries per job in the flat replies of flush_stale.lua; fetch.lua adds
# the job's trace context.
ROW = 9
FETCH_ROW = 10

# Where a job can be; exactly one at any moment (the record's "state").
STATES = ("scheduled", "waiting", "pending", "active", "succeeded", "failed", "cancelled")
# States a job does not leave by itself: wait() returns on these.
ENDED = frozenset(("succeeded", "failed", "cancelled"))


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
    # One of STATES as Redis had it when this Job was read (None: not read
    # from the record, e.g. a job handed to a running task).
    state: str | None = None
    result: Any = None    # what perform returned, once succeeded
    # The queue partition it was fetched from (its outcome goes back there).
    partition: int = field(default=0, repr=False, compare=False)
    # W3C traceparent of its latest span (greenq/tracing.py): the submit's,
    # then, in the process running it, that run's (None: not traced).
    trace: str | None = field(default=None, repr=False, compare=False)

    @property
    def fencing_token(self) -> int:
        """The lease of the current (or last) run: drawn from one counter per
        queue, so every run started holds a larger token than every earlier
        run of any job, those of its resource included. 0 before a first run."""
        try:
            return int(self.token or 0)
        except ValueError:
            return 0


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
    resource, encoding, params, retries, attempts, error (and from fetch,
    the trace context).

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
        trace=text(row[9]) if len(row) > 9 else None,
    )
    try:
        job.params = decode_params(row[4], row[5], max_params_bytes)
    except JobDecodeError as exc:
        exc.job = job
        raise
    return job


def job_from_record(job_id: str, record: dict, max_params_bytes: int) -> Job:
    """A Job from a record as HGETALL returns it (bytes keys). Params or a
    result that cannot be decoded are left as the raw bytes (an operator's
    view must still show the job); its error text says why it failed."""
    get = record.get
    job = Job(id=job_id, task_id=text(get(b"task")) or "", resource_id=text(get(b"res")),
              params=None, retries=number(get(b"retries")), attempts=number(get(b"attempts")),
              error=text(get(b"error")), token=text(get(b"lease")) or "",
              state=text(get(b"state")), trace=text(get(b"trace")))
    try:
        job.params = decode_params(get(b"enc"), get(b"params"), max_params_bytes)
    except JobDecodeError:
        job.params = get(b"raw", get(b"params"))
    if b"result" in record:
        try:
            job.result = decode_params(get(b"renc"), get(b"result"), max_params_bytes, "result")
        except JobDecodeError:
            job.result = get(b"result")
    return job
