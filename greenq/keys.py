"""Every Redis key of one queue partition, in one place. All share one hash
tag, ``{queue_id}`` for a queue of one partition and ``{queue_id:k}`` for
partition k of several, so a partition lives in one Redis Cluster slot."""

from __future__ import annotations


class Keys:
    """Key names for queue `queue_id` under `namespace`; `partition`: one
    partition of a queue of several (None: a queue of one).

    Fixed keys are attributes; per-id keys (``job:<id>``, ``wait:<resource>``,
    ``owned:<process id>``, ``receipts:<process id>``, ``sent:<nonce>``,
    ``cancels:<process id>``, ``rate:<task id>``, ``schedule:<name>``) are
    built inside the Lua scripts from `prefix`.
    """

    __slots__ = ("prefix", "pending", "handoff", "locks", "held", "counts", "failed", "procs",
                 "beats", "clock", "workers", "alive", "delayed", "rates", "retry_policies",
                 "ended", "schedules", "metrics", "history")

    def __init__(self, namespace: str, queue_id: str, partition: int | None = None) -> None:
        tag = queue_id if partition is None else f"{queue_id}:{partition}"
        self.prefix = f"{namespace}:{{{tag}}}:"
        self.pending = self.prefix + "pending"  # LIST runnable job ids
        # LIST ids an idle fetcher's wait took from pending, leased by the
        # fetch pipelined behind that wait (or by any later fetch).
        self.handoff = self.prefix + "handoff"
        self.locks = self.prefix + "locks"      # HASH resource -> holding job id
        # HASH holding job id -> resource, only for holders that jobs wait
        # behind: how a holder whose record vanished frees them.
        self.held = self.prefix + "held"
        self.counts = self.prefix + "counts"    # HASH active / waiting counters
        self.failed = self.prefix + "failed"    # LIST failed job ids, oldest first
        self.procs = self.prefix + "procs"      # ZSET process -> stale-at ms
        self.beats = self.prefix + "beats"      # HASH process -> last beat ms
        self.clock = self.prefix + "clock"      # HASH last worker call ms, flush grace after a stall
        # The registry of worker processes, idle ones included (procs and
        # beats hold only processes that hold jobs): HASH process id -> JSON
        # {host, pid, role, capacity, started_ms, ...}, written by its first
        # heartbeat and deleted at a clean stop; ZSET process id -> last
        # heartbeat ms. Silent for config.PROCESS_GONE_AFTER: not live, and
        # pruned by the next heartbeat of any process (heartbeat.lua).
        self.workers = self.prefix + "workers"
        self.alive = self.prefix + "alive"
        # ZSET job id -> ms it becomes runnable: every job that waits for a
        # time (submitted with a delay, a retry's back-off, a rate limit's
        # slot, a give-back for a worker that knows its task); fetch.lua
        # promotes it.
        self.delayed = self.prefix + "delayed"
        # HASH task id -> ms of the next free rate-limit slot (fetch.lua);
        # rate:<task id> is a LIST of that task's latest start times.
        self.rates = self.prefix + "rates"
        # HASH task id -> "delay_ms backoff max_ms": the retry back-off of
        # tasks with a retry_delay, written by every worker process that
        # registered them (last writer wins), so that a stale flush retries a
        # dead job after its back-off even where the task is unknown.
        self.retry_policies = self.prefix + "retry_policies"
        # Pub/sub channel, not a key: the id of every job that ended while
        # its record carried a "watch" mark (a wait() was on it), published
        # by the script that ended it (include/ended.lua, watch.lua).
        self.ended = self.prefix + "ended"
        # ZSET schedule name -> next fire time ms; each schedule's definition
        # is the HASH schedule:<name> (see scripts/save_schedule.lua).
        self.schedules = self.prefix + "schedules"
        # HASH per-task outcome counters and duration / wait histograms, and
        # HASH a ring of per-minute outcome counts: written by the scripts
        # that end jobs (include/metrics.lua), read by greenq/metrics.py.
        self.metrics = self.prefix + "metrics"
        self.history = self.prefix + "history"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def wait(self, resource_id: str) -> str:
        return f"{self.prefix}wait:{resource_id}"

    def owned(self, process_id: str) -> str:
        return f"{self.prefix}owned:{process_id}"

    def receipts(self, process_id: str) -> str:
        return f"{self.prefix}receipts:{process_id}"

    def cancels(self, process_id: str) -> str:
        return f"{self.prefix}cancels:{process_id}"

    def schedule(self, name: str) -> str:
        return f"{self.prefix}schedule:{name}"


def partitions_key(namespace: str, queue_id: str) -> str:
    """STRING: how many partitions the queue has, written at its first use
    (under the hash tag of a queue of one, which such a queue's keys share)."""
    return f"{namespace}:{{{queue_id}}}:partitions"
