"""A queue's state read straight from Redis, for the tests' assertions."""

from __future__ import annotations


def queued_ids(r, prefix: str) -> list[bytes]:
    """Runnable job ids, next to run first: ids an idle worker's wait took
    from pending (its fetch, or any later one, leases them first), then the
    pending list."""
    handed_off = r.lrange(prefix + "handoff", 0, -1)
    pending = r.lrange(prefix + "pending", 0, -1)
    return [*reversed(handed_off), *reversed(pending)]


ENDED_KEPT = (b"succeeded", b"cancelled")


def unfinished_records(r, prefix: str) -> list[bytes]:
    """Keys of job records other than the ended ones kept for result_ttl
    (succeeded or cancelled, with an expiry): what a drained queue must not hold."""
    return sorted(unfinished_records_at(r, r.keys(prefix + "job:*")))


def unfinished(r, key) -> bool:
    """Whether the job record at `key` is there and not an ended one kept
    for result_ttl: the test of "this job is done and gone" now that
    succeeded records stay a while."""
    return key in unfinished_records_at(r, [key])


def unfinished_records_at(r, keys) -> list:
    left = []
    for key in keys:
        if not r.exists(key):
            continue
        if r.type(key) != b"hash" or r.hget(key, "state") not in ENDED_KEPT or r.pttl(key) < 0:
            left.append(key)
    return left


def assert_queue_empty(r, prefix: str) -> None:
    """Nothing left of a queue but bookkeeping and the records of ended jobs
    kept for result_ttl: no job, lock, wait list or count."""
    assert queued_ids(r, prefix) == []
    assert r.llen(prefix + "failed") == 0
    counts = r.hgetall(prefix + "counts")
    assert int(counts.get(b"active", 0)) == 0, counts
    assert int(counts.get(b"waiting", 0)) == 0, counts
    assert r.hlen(prefix + "locks") == 0
    assert unfinished_records(r, prefix) == []
    assert r.keys(prefix + "wait:*") == []
