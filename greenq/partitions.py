"""A queue's partitions: one Broker each, and the queue-wide calls that
span them (submit, one job by id, counts, the failed queue, schedules).

A resource always maps to the same partition (a stable hash of its id), so
every per-resource guarantee holds as on one partition; a job without a
resource goes by its job id, which spreads such jobs evenly. A queue of one
partition is the same code with one broker: every call below then makes the
single call it always made."""

from __future__ import annotations

import zlib
from typing import Any, Callable, Iterable, Sequence

import redis

from . import config
from .broker import Broker, coalesced_rows, record_from_flat
from .keys import Keys, partitions_key
from .nodes import Nodes, redirection, slot_of

# Partitions a queue may have: each costs every worker process one
# connection, and every tick one heartbeat and one flush call.
MAX_PARTITIONS = 256


def check_partitions(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be None or an int from 1 to {MAX_PARTITIONS}, "
                         f"not {value!r}")
    return value


def stored_partitions(nodes: Nodes, namespace: str, queue_id: str, wanted: int | None,
                      store: bool) -> tuple[int, bool]:
    """How many partitions the queue has, and whether that number is stored
    in Redis: the stored number, else `wanted` (1 when None), which is
    stored when `store` (a submit, a worker's start: the queue's first use).
    ValueError when `wanted` differs from the stored number, or when it asks
    for several partitions of a queue already used with one."""
    key = partitions_key(namespace, queue_id)
    client = nodes.client(nodes.address(slot_of(key)))
    stored = client.get(key)
    if stored is None:
        count = wanted or 1
        if not store:
            return count, False
        if count > 1 and Broker(nodes, Keys(namespace, queue_id)).queue_exists():
            raise ValueError(
                f"queue {queue_id!r} is in use with one partition (its keys exist under "
                f"{namespace}:{{{queue_id}}}:); partitions={count} would hide its jobs. Drain "
                f"it, or use another queue_id for the partitioned queue")
        client.set(key, count, nx=True)
        stored = client.get(key)
    try:
        count = int(stored)
        if not 1 <= count <= MAX_PARTITIONS:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{key} holds {stored!r}, not a number of partitions") from None
    if wanted is not None and wanted != count:
        raise ValueError(f"queue {queue_id!r} has {count} partition{'s' * (count != 1)} in "
                         f"Redis ({key}); partitions={wanted} differs. Pass partitions=None "
                         f"(or {count}) to use it as it is")
    return count, True


class Partitions:
    """The `count` partitions of queue `queue_id`."""

    def __init__(self, nodes: Nodes, namespace: str, queue_id: str, count: int,
                 result_ttl: float = config.DEFAULT_RESULT_TTL, replicas: int = 0) -> None:
        self.nodes = nodes
        self.count = count
        self.brokers = [Broker(nodes, Keys(namespace, queue_id, None if count == 1 else k),
                               result_ttl, replicas) for k in range(count)]
        self.socket_timeout = self.brokers[0].socket_timeout

    def of(self, resource_id: str | None, job_id: str) -> int:
        """The partition of a job: its resource's, else its id's."""
        if self.count == 1:
            return 0
        return zlib.crc32((resource_id or job_id).encode()) % self.count

    def by_node(self, partitions: Iterable[int] | None = None) -> list[list[int]]:
        """`partitions` (all by default) grouped by the node that serves them."""
        groups: dict[Any, list[int]] = {}
        for k in range(self.count) if partitions is None else partitions:
            groups.setdefault(self.brokers[k].address, []).append(k)
        return list(groups.values())

    # -- submit ----------------------------------------------------------------

    def add(self, rows: Sequence[Sequence]) -> tuple[int, list[str]]:
        """Broker.add over the partitions: each row to its own, one round
        trip per node."""
        if self.count == 1:
            return self.brokers[0].add(rows)
        placed: dict[int, list[int]] = {}
        for index, row in enumerate(rows):
            placed.setdefault(self.of(row[2], row[0]), []).append(index)
        ids = [row[0] for row in rows]
        added = 0
        for group in self.by_node(sorted(placed)):
            calls, owners = [], []
            for k in group:
                indices = placed[k]
                part_calls = self.brokers[k].submit_calls([rows[i] for i in indices])
                calls += part_calls
                owners += [(indices, c) for c in range(len(part_calls))]
            replies = self.brokers[group[0]]._pipeline(None, calls, resend_safe=True)
            for (indices, c), (count, coalesced) in zip(owners, replies):
                added += count
                for index, job_id in coalesced_rows(coalesced, c):
                    ids[indices[index]] = job_id
        return added, ids

    # -- one job by id ---------------------------------------------------------

    def _gather(self, commands_of: Callable[[Broker], list]) -> list[list]:
        """commands_of(broker) for every partition, one round trip per node;
        each partition's replies. A MOVED or ASK reply (a slot moving) has
        the slot map read again and everything sent once more."""
        for attempt in (1, 2):
            replies: list[list] = [[] for _ in range(self.count)]
            moved = False
            for group in self.by_node():
                commands, spans = [], []
                for k in group:
                    mine = commands_of(self.brokers[k])
                    spans.append((k, len(commands), len(mine)))
                    commands += mine
                if not commands:
                    continue
                got = self.brokers[group[0]]._send(None, commands, resend_safe=True)
                for k, start, size in spans:
                    replies[k] = got[start:start + size]
                moved |= any(redirection(reply) is not None for reply in got)
            if not moved or attempt == 2:
                return replies
            self.nodes.stale()
            self.nodes.refresh()
        return replies

    def job_records(self, job_ids: Sequence[str]) -> list[dict]:
        """The record of each id (HGETALL, bytes keys; {} when none), from
        whichever partition holds it."""
        if self.count == 1:
            return self.brokers[0].job_records(job_ids)
        replies = self._gather(lambda b: [("HGETALL", b.keys.job(i)) for i in job_ids])
        found: list[dict] = [{} for _ in job_ids]
        for per_partition in replies:
            for index, reply in enumerate(per_partition):
                record = _as_dict(reply)
                if record and not found[index]:
                    found[index] = record
        return found

    def metrics_hashes(self) -> list[dict[bytes, bytes]]:
        """Each partition's metrics HASH (scripts/include/metrics.lua), one
        round trip per node."""
        return [_as_dict(reply[0]) for reply in self._gather(lambda b: [("HGETALL", b.keys.metrics)])]

    def history_slots(self, fields: Sequence[str]) -> list[list]:
        """`fields` of each partition's history HASH, one round trip per node."""
        return [reply[0] for reply in self._gather(lambda b: [("HMGET", b.keys.history, *fields)])]

    def record(self, job_id: str) -> dict:
        return self.job_records([job_id])[0]

    def cancel(self, job_id: str) -> int:
        """cancel.lua in the partition that holds the job (1 cancelled)."""
        if self.count == 1:
            return self.brokers[0].cancel(job_id)
        return max(broker.cancel(job_id) for broker in self.brokers)

    def watch(self, job_ids: Sequence[str]) -> list[list | None]:
        """Broker.watch, each id in the partition that holds it."""
        if self.count == 1:
            return self.brokers[0].watch(job_ids)
        found: list[list | None] = [None] * len(job_ids)
        for broker in self.brokers:
            missing = [i for i, reply in enumerate(found) if reply is None]
            if not missing:
                break
            for index, reply in zip(missing, broker.watch([job_ids[i] for i in missing])):
                found[index] = reply
        return found

    def subscribe_ended(self) -> redis.client.PubSub:
        """One pub/sub connection on every partition's `ended` channel
        (a cluster broadcasts a PUBLISH to every node)."""
        first = self.brokers[0]
        pubsub = first.channel(1).pubsub()
        pubsub.subscribe(*[broker.keys.ended for broker in self.brokers])
        return pubsub

    # -- the whole queue -------------------------------------------------------

    def stats(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for k, broker in enumerate(self.brokers):
            for name, value in broker.stats().items():
                if name == "workers":  # each process heartbeats every partition
                    totals[name] = max(totals.get(name, 0), value)
                else:
                    totals[name] = totals.get(name, 0) + value
        return totals

    def inspect(self, limit: int) -> dict:
        report = self.brokers[0].inspect(limit)
        for broker in self.brokers[1:]:
            more = broker.inspect(limit)
            report["running"] = (report["running"] + more["running"])[:limit]
            report["locked"] = sorted(report["locked"] + more["locked"],
                                      key=lambda item: -item["waiting"])[:limit]
        return report

    def failed_records(self, limit: int) -> list[tuple[bytes, dict]]:
        """The `limit` oldest failed jobs of the queue, by when they ended."""
        if self.count == 1:
            return self.brokers[0].failed_records(limit)
        merged = [entry for broker in self.brokers for entry in broker.failed_records(limit)]
        merged.sort(key=lambda entry: int(entry[1].get(b"ended") or 0))
        return merged[:limit]

    def queue_exists(self) -> bool:
        return any(broker.queue_exists() for broker in self.brokers)

    def load_scripts(self) -> None:
        """SCRIPT LOAD on every node that serves a partition."""
        for group in self.by_node():
            self.brokers[group[0]].load_scripts()

    def publish_retry_policies(self, tasks: Sequence[Any]) -> None:
        for broker in self.brokers:
            broker.publish_retry_policies(tasks)

    # -- schedules -------------------------------------------------------------

    def schedule_home(self, name: str, resource_id: str | None) -> Broker:
        """The partition that keeps schedule `name`: its jobs' resource's
        (its own resource, schedule:<name>, by default), so that firing it
        is one script in one partition."""
        return self.brokers[self.of(resource_id or f"schedule:{name}", name)]

    def all_schedules(self) -> list[tuple[str, int, dict[bytes, bytes]]]:
        found = [entry for broker in self.brokers for entry in broker.all_schedules()]
        found.sort(key=lambda entry: (entry[1], entry[0]))
        return found

    def remove_schedule(self, name: str, keep: Broker | None = None) -> bool:
        """Remove schedule `name` from every partition (but `keep`)."""
        removed = False
        for broker in self.brokers:
            if broker is not keep:
                removed |= broker.remove_schedule(name)
        return removed

    def next_fire_ms(self, name: str) -> int | None:
        for broker in self.brokers:
            score = broker.shared.zscore(broker.keys.schedules, name)
            if score is not None:
                return int(score)
        return None


def _as_dict(reply: Any) -> dict:
    """An HGETALL reply as a dict, whichever form the connection gave it."""
    if isinstance(reply, Exception):
        raise reply
    return record_from_flat(reply)
