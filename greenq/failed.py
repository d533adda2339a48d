"""The failed-queue filters: retry, delete or list only the failed jobs of
given ids and/or of one task. Checks the filters before anything is
written; the selection itself is failed_select.lua, through the broker."""

from __future__ import annotations

from typing import Any

from . import config
from .broker import Broker

# Slots of the failed list one walk call covers, and ids one listing reads
# at a time: bounded work per Redis call.
WALK_BATCH = 1000


def check_filters(job_ids: Any, task_id: Any) -> tuple[list[str] | None, str | None]:
    """The filters checked: job ids an iterable of non-empty str (a bare
    str is refused: taken as an iterable it would be one id per character),
    deduplicated in order; task id a non-empty str. None: no such filter."""
    from .queue import _check_id  # the submit's own id checks; queue imports this module

    if task_id is not None:
        task_id = _check_id(task_id, "task_id")
    if job_ids is None:
        return None, task_id
    if isinstance(job_ids, (str, bytes, bytearray)):
        raise TypeError(f"job_ids must be an iterable of job ids, not a {type(job_ids).__name__}; "
                        "for one id, pass [job_id]")
    try:
        items = list(job_ids)
    except TypeError:
        raise TypeError("job_ids must be an iterable of job ids (str), "
                        f"not {type(job_ids).__name__}") from None
    ids = [_check_id(job_id, f"job_ids[{index}]") for index, job_id in enumerate(items)]
    return list(dict.fromkeys(ids)), task_id


def select(broker: Broker, mode: str, job_ids: list[str] | None, task_id: str | None) -> int:
    """Retry or delete (`mode`) the failed jobs matching the checked
    filters, at least one of them given. Returns how many."""
    if job_ids is not None:
        return sum(broker.failed_select(mode, job_ids=job_ids[start:start + config.SCRIPT_BATCH],
                                        task_id=task_id or "")[0]
                   for start in range(0, len(job_ids), config.SCRIPT_BATCH))
    if task_id is None:
        raise ValueError("select() needs job_ids or task_id")
    total, cursor, done = 0, 0, False
    while not done:
        acted, cursor, done = broker.failed_select(mode, task_id=task_id, cursor=cursor,
                                                   limit=WALK_BATCH)
        total += acted
    return total


def records_of_task(broker: Broker, task_id: str, limit: int) -> list[tuple[bytes, dict]]:
    """The oldest `limit` failed records of task `task_id`: reads the failed
    list's ids with their task ids a chunk at a time (a record is fetched
    whole only when it matches) until `limit` matched or the list ended."""
    wanted, start = task_id.encode(), 0
    matched: list[bytes] = []
    while len(matched) < limit:
        chunk = broker.failed_tasks(start, WALK_BATCH)
        matched += [job_id for job_id, task in chunk if task == wanted]
        if len(chunk) < WALK_BATCH:
            break
        start += len(chunk)
    return broker.records(matched[:limit])

