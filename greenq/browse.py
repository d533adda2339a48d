"""Read-only, paginated views of one queue for the dashboard, and its actions.

Every page reads a bounded slice of Redis through the read-only
browse_*.lua scripts (via Broker.browse): ranges of lists and sorted sets,
HSCAN over hashes, only the record fields a row shows (HMGET, never
params). Pages go partition by partition: partition 0's items in the
view's order, then partition 1's, and so on. A cursor is an opaque text
(view, partition, position) handed back for the next page; a queue that
changes between pages may repeat or skip an item. See docs/browse.md."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import config
from .broker import Broker
# The detail view, tallies and actions live there; this module is the one door.
from .browse_actions import (_check_task, cancel, cancel_all, count_matching, counts, delete,
                             delete_all_failed, failed_tasks, job, retry, retry_all_failed)
from .schedules import timing_from_fields

__all__ = ["Page", "counts", "running", "locked", "waiting_behind", "pending", "scheduled",
           "schedules", "processes", "failed", "failed_tasks", "job", "retry", "delete", "cancel",
           "retry_all_failed", "delete_all_failed", "cancel_all", "count_matching"]

MAX_LIMIT = 500
SCAN_PER_CALL = 10_000    # list slots one script call walks at most: a few ms of Redis time
SCAN_PER_PAGE = 200_000   # slots a filtered page walks at most before it returns what it found
HSCAN_HINT, HSCAN_ROUNDS = 200, 20   # HSCAN COUNT, and HSCAN calls per script call
ERROR_CHARS = 300


def _tail(text: str) -> str:
    """The end of an error text: a traceback's end says where and what."""
    return text if len(text) <= ERROR_CHARS else "..." + text[-ERROR_CHARS:]


def _error_line(text: str | None) -> str | None:
    """The last non-empty line of an error text, for a traceback the
    exception and its message, at most ERROR_CHARS characters."""
    if text is None:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:ERROR_CHARS] if lines else ""


@dataclass
class Page:
    items: list[dict]        # JSON-able dicts; all strings decoded (errors="replace")
    total: int | None        # how many match in all, when cheap to know (else None)
    cursor: str | None       # opaque; pass back to get the next page; None: this is the last page


def _text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int | None:
    try:
        return None if value is None or value is False else int(value)
    except ValueError:
        return None


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an int from 1 to {MAX_LIMIT}, not {limit!r}")
    return limit


def _parse(cursor: Any, view: str, parts: int, partitions: int) -> list[int]:
    """The numbers of `cursor` (partition first), [0] * parts for None."""
    if cursor is None:
        return [0] * parts
    words = cursor.split(":") if isinstance(cursor, str) else []
    try:
        if len(words) != parts + 1 or words[0] != view:
            raise ValueError
        numbers = [int(word) for word in words[1:]]
    except ValueError:
        raise ValueError(f"bad cursor {cursor!r}: not a cursor of the {view} view; pass "
                         f"back the cursor of the page before, or None for the first page") from None
    if min(numbers) < 0 or numbers[0] >= partitions:
        raise ValueError(f"bad cursor {cursor!r}: out of range for this queue "
                         f"({partitions} partition{'s' * (partitions != 1)})")
    return numbers


def _cursor(view: str, *numbers: Any) -> str:
    return ":".join([view, *map(str, numbers)])


# -- pages of lists and sorted sets ---------------------------------------------

def _walk(queue: Any, view: str, segments: Callable[[Broker], Sequence[tuple[str, str]]],
          cursor: Any, limit: int,
          fields: Sequence[str], make: Callable[[list, int], dict], *, kind: str = "list",
          record: str = "job:", task: str = "", skip_cancelled: bool = False,
          total: int | None = None) -> Page:
    """A page over each partition's `segments` (key, "left"/"right" end
    first), in that order; `make(row, partition)` builds an item from a
    browse_page.lua row (id, score, fields...)."""
    limit = _check_limit(limit)
    brokers = queue.brokers
    k, s, pos = _parse(cursor, view, 3, len(brokers))
    items: list[dict] = []
    budget = SCAN_PER_PAGE
    width = 2 + len(fields)
    while k < len(brokers):
        broker = brokers[k]
        keys = segments(broker)
        while s < len(keys):
            key, side = keys[s]
            rows, new_pos, _size, done = broker.browse(
                "page", (key,), (broker.keys.prefix + record, kind, side, pos, limit - len(items),
                                 min(SCAN_PER_CALL, budget), task, "1" if skip_cancelled else "0",
                                 *fields))
            budget -= new_pos - pos
            pos = new_pos
            items += [make(rows[i:i + width], k) for i in range(0, len(rows), width)]
            if done:
                s, pos = s + 1, 0
            if len(items) >= limit or (budget <= 0 and not done):
                if s >= len(keys):
                    k, s = k + 1, 0
                return Page(items, total, None if k >= len(brokers) else _cursor(view, k, s, pos))
        k, s, pos = k + 1, 0, 0
    return Page(items, total, None)


def _summary(row: list, partition: int) -> dict:
    job_id, _score, task, resource, state, attempts = row
    return {"id": _text(job_id), "task": _text(task), "resource": _text(resource),
            "state": _text(state), "attempts": _int(attempts) or 0, "partition": partition}


SUMMARY = ("task", "res", "state", "attempts")


def _runnable(broker: Broker) -> list[tuple[str, str]]:
    # Ids a waiting fetcher took from pending are leased first, then pending's right end.
    return [(broker.keys.handoff, "right"), (broker.keys.pending, "right")]


def pending(queue: Any, cursor: str | None = None, limit: int = 50) -> Page:
    """Runnable jobs, next to run first (cancelled ids still in the lists skipped)."""
    return _walk(queue, "pending", _runnable, cursor, limit, SUMMARY, _summary,
                 skip_cancelled=True, total=counts(queue)["pending"])


def waiting_behind(queue: Any, resource: str, cursor: str | None = None,
                   limit: int = 50) -> Page:
    """The jobs queued behind `resource`'s holder, next first. total: the
    wait list's length, cancelled ids not yet skipped included."""
    if not isinstance(resource, str) or not resource:
        raise ValueError(f"resource must be a non-empty str, not {resource!r}")
    home = queue.brokers[queue._partition_set().of(resource, resource)]
    key = home.keys.wait(resource)
    size = home.browse("page", (key,), (home.keys.prefix + "job:", "list", "left", 0, 0, 0, "",
                                        "0"))[2]  # a call that walks nothing: the length alone
    return _walk(queue, "waiting", lambda b: [(key, "left")] if b is home else [], cursor, limit,
                 SUMMARY, _summary, skip_cancelled=True, total=size)


def scheduled(queue: Any, cursor: str | None = None, limit: int = 50) -> Page:
    """Jobs that wait for a time (delay, retry back-off, rate limit), soonest first."""
    def make(row: list, partition: int) -> dict:
        job_id, due, task, resource = row
        return {"id": _text(job_id), "task": _text(task), "resource": _text(resource),
                "due_ms": _int(due), "partition": partition}
    return _walk(queue, "scheduled", lambda b: [(b.keys.delayed, "left")], cursor, limit,
                 ("task", "res"), make, kind="zset", total=counts(queue)["scheduled"])


def schedules(queue: Any, cursor: str | None = None, limit: int = 50) -> Page:
    """The schedules, soonest next run first (params left out: a list view)."""
    def make(row: list, partition: int) -> dict:
        name, next_ms, task, resource, cron, every, tz, retries, last = row
        last_ms = _int(last)
        timing = timing_from_fields(_text(cron) or "", _text(every) or "", _text(tz) or "UTC")
        return {"name": _text(name), "task_id": _text(task), "cron": timing.cron,
                "every": timing.every, "tz": timing.tz,
                "resource_id": _text(resource) or None, "retries": _int(retries) or 0,
                "next_run": (_int(next_ms) or 0) / 1000, "next_run_ms": _int(next_ms),
                "last_run": None if last_ms is None else last_ms / 1000,
                "partition": partition}
    return _walk(queue, "schedules", lambda b: [(b.keys.schedules, "left")], cursor, limit,
                 ("task", "res", "cron", "every", "tz", "retries", "last"), make,
                 kind="zset", record="schedule:")


def failed(queue: Any, task: str | None = None, cursor: str | None = None,
           limit: int = 50) -> Page:
    """Failed jobs, newest first (the failed list's end); only those of
    `task` when given (total None then: counting them walks the list)."""
    task = _check_task(task)

    def make(row: list, partition: int) -> dict:
        job_id, _score, task_id, resource, error, ended, attempts = row
        text = _text(error)
        return {"id": _text(job_id), "task": _text(task_id), "resource": _text(resource),
                "error": None if text is None else _tail(text), "summary": _error_line(text),
                "ended_ms": _int(ended),
                "attempts": _int(attempts) or 0, "partition": partition}
    return _walk(queue, "failed", lambda b: [(b.keys.failed, "right")], cursor, limit,
                 ("task", "res", "error", "ended", "attempts"), make, task=task,
                 total=None if task else counts(queue)["failed"])


# -- pages of hashes (HSCAN) ----------------------------------------------------

def _scan_pages(queue: Any, view: str, cursor: Any, limit: int, extra: int,
                call: Callable[[Broker, list[int], int], tuple[list[dict], list[int], bool]],
                partitions: int | None = None) -> tuple[list[dict], str | None]:
    """Items and next cursor of an HSCAN-driven view: `call(broker, state,
    want)` returns (items, next state, done) for one partition; the state
    is the scan cursor, then `extra` more numbers."""
    limit = _check_limit(limit)
    count = partitions or len(queue.brokers)
    k, *state = _parse(cursor, view, 2 + extra, count)
    items: list[dict] = []
    while k < count:
        got, state, done = call(queue.brokers[k], state, limit - len(items))
        items += [{**item, "partition": k} for item in got]
        if done:
            k, state = k + 1, [0] * (1 + extra)
        if len(items) >= limit or not done:
            break
    return items, None if k >= count else _cursor(view, k, *state)


def locked(queue: Any, cursor: str | None = None, limit: int = 50) -> Page:
    """Held resources (HSCAN order), each with what waits behind it."""
    def call(broker: Broker, state: list[int], want: int) -> tuple[list[dict], list[int], bool]:
        rows, scan, skip, done, _ = broker.browse(
            "locked", (broker.keys.locks,), (broker.keys.prefix, *state, want, HSCAN_HINT,
                                             HSCAN_ROUNDS, 5))
        items = [{"resource": _text(rows[i]), "holder": _text(rows[i + 1]),
                  "holder_state": _text(rows[i + 2]) or "missing", "waiting": rows[i + 3],
                  "next": [_text(x) for x in rows[i + 4]]} for i in range(0, len(rows), 5)]
        return items, [int(scan), skip], bool(done)
    items, next_cursor = _scan_pages(queue, "locked", cursor, limit, 1, call)
    return Page(items, counts(queue)["locked_resources"], next_cursor)


def _about(blob: Any, proc: str) -> dict:
    try:
        info = json.loads(blob) if blob else {}
    except ValueError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    host, _, rest = proc.partition(":")  # ids are host:pid:nonce (GreenQueue.process_id)
    info.setdefault("host", host)
    info.setdefault("pid", _int(rest.partition(":")[0]))
    return info


def running(queue: Any, cursor: str | None = None, limit: int = 50) -> Page:
    """Running jobs, process by process (HSCAN order of the processes
    holding jobs), each process's by timeout then id."""
    def call(broker: Broker, state: list[int], want: int) -> tuple[list[dict], list[int], bool]:
        k = broker.keys
        rows, about, scan, skip, offset, done, now, _ = broker.browse(
            "running", (k.beats, k.workers, k.counts),
            (k.prefix, *state, want, HSCAN_HINT, HSCAN_ROUNDS))
        info = {_text(about[i]): about[i + 1] for i in range(0, len(about), 2)}
        items = []
        for i in range(0, len(rows), 8):
            job_id, proc, beat, timeout, task, resource, started, attempts = rows[i:i + 8]
            proc = _text(proc) or ""
            who = _about(info.get(proc), proc)
            items.append({
                "id": _text(job_id), "task": _text(task), "resource": _text(resource),
                "process": proc, "host": _text(who.get("host")), "pid": who.get("pid"),
                "age": None if _int(started) is None else (now - int(started)) / 1000,
                "last_heartbeat": (now - int(beat)) / 1000, "attempts": _int(attempts) or 0,
                "timeout": int(float(timeout)) / 1000})
        return items, [int(scan), skip, offset], bool(done)
    items, next_cursor = _scan_pages(queue, "running", cursor, limit, 2, call)
    return Page(items, counts(queue)["active"], next_cursor)


def processes(queue: Any, cursor: str | None = None, limit: int = 50) -> Page:
    """Live worker processes (HSCAN order of the registry). Every process
    registers in every partition, so partition 0's registry lists them all;
    `running` counts the jobs each holds in every partition."""
    found: list[int] = []

    def call(broker: Broker, state: list[int], want: int) -> tuple[list[dict], list[int], bool]:
        k = broker.keys
        rows, scan, skip, done, now, live = broker.browse(
            "processes", (k.workers, k.alive),
            (k.prefix, *state, want, HSCAN_HINT, HSCAN_ROUNDS, int(config.PROCESS_GONE_AFTER * 1000)))
        found.append(live)
        items = []
        for i in range(0, len(rows), 4):
            proc = _text(rows[i]) or ""
            info = _about(rows[i + 1], proc)
            items.append({**info, "id": proc, "role": info.get("role"),
                          "capacity": info.get("capacity"), "started_ms": info.get("started_ms"),
                          "last_heartbeat": (now - int(rows[i + 2])) / 1000,
                          "running": rows[i + 3]})
        return items, [int(scan), skip], bool(done)
    items, next_cursor = _scan_pages(queue, "processes", cursor, limit, 1, call, partitions=1)
    ids = [item["id"] for item in items]
    for broker in queue.brokers[1:] if ids else ():
        for item, held in zip(items, broker.browse("owned", (broker.keys.workers,),
                                                   (broker.keys.prefix, *ids))):
            item["running"] += held
    return Page([{n: v for n, v in item.items() if n != "partition"} for item in items],
                found[0] if found else None, next_cursor)
