"""A queue's state read straight from Redis, for the tests' assertions."""

from __future__ import annotations


def queued_ids(r, prefix: str) -> list[bytes]:
    """Runnable job ids, next to run first: ids an idle worker's wait took
    from pending (its fetch, or any later one, leases them first), then the
    pending list."""
    handed_off = r.lrange(prefix + "handoff", 0, -1)
    pending = r.lrange(prefix + "pending", 0, -1)
    return [*reversed(handed_off), *reversed(pending)]


def assert_queue_empty(r, prefix: str) -> None:
    """Nothing left of a queue but bookkeeping: no job, lock, wait list or count."""
    assert queued_ids(r, prefix) == []
    assert r.llen(prefix + "failed") == 0
    counts = r.hgetall(prefix + "counts")
    assert int(counts.get(b"active", 0)) == 0, counts
    assert int(counts.get(b"waiting", 0)) == 0, counts
    assert r.hlen(prefix + "locks") == 0
    assert r.keys(prefix + "job:*") == []
    assert r.keys(prefix + "wait:*") == []
