"""The only module that talks to Redis: one method per Lua script, plus the
read-only queries. Methods that sit on a hot path take the client (a
dedicated connection) they run on; the rest use a small shared pool."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Any, Callable, Iterable, Sequence, Union

import redis
from redis.exceptions import NoScriptError, ResponseError

from . import config, scripts
from .channel import ChannelPool, ScriptChannel
from .errors import BrokerError
from .job import ENDED
from .keys import Keys
from .nodes import Nodes, redirection, slot_of, try_again

log = logging.getLogger(__name__)

# Transient trouble: worth a retry with back-off, reported once per outage.
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)
# What the worker loops ride out: the above, and refusals such as NOPERM
# after an ACL change (reported once, retried with back-off, not fatal).
REDIS_TROUBLE = (redis.RedisError, ConnectionError, OSError)


class UnconfirmedWriteError(BrokerError, redis.RedisError):
    """Raised when Redis ran a write but fewer replicas than `Broker.replicas`
    confirmed it in time. A BrokerError for callers (submit_job); Redis
    trouble (REDIS_TROUBLE) for the worker loops, which ride it out."""


# Where a script call runs: a script channel (the hot paths), a redis-py
# client (queries, admin calls, the lifeline thread), or None where a
# method's doc says what it picks.
Client = Union[redis.Redis, ScriptChannel, None]

_STALL_ARGS = (int(config.REDIS_STALL * 1000), int(config.STALL_GRACE * 1000))
_GONE_MS = int(config.PROCESS_GONE_AFTER * 1000)

# The scripts whose writes a broker with `replicas` waits for (Redis WAIT):
# a submit and a job's finish. Fetches, heartbeats and flushes do not: what
# they write is rebuilt (a lost lease runs the job again) after a failover.
ACKNOWLEDGED = frozenset({"submit", "complete", "fail", "give_back", "give_back_unknown"})


def _flag(value: bool) -> str:
    return "1" if value else "0"


def coalesced_rows(coalesced: Sequence, call: int) -> list[tuple[int, str]]:
    """submit.lua's coalesced pairs (position in its call, 1-based; id merged
    into) for the `call`-th call of submit_calls, as (index among the rows
    submitted, id)."""
    first = call * config.SCRIPT_BATCH
    return [(first + int(position) - 1, job_id.decode() if isinstance(job_id, bytes)
             else str(job_id)) for position, job_id in zip(coalesced[0::2], coalesced[1::2])]


def record_from_flat(flat: list | dict) -> dict:
    """A record from HGETALL's raw flat reply (field, value, ...) as a dict,
    as redis-py's client would give it."""
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[0::2], flat[1::2]))


# A script sent during a slot migration, whose keys are split between the
# two nodes for the moment, is refused with TRYAGAIN (it did not run): sent
# again this many times, this long apart, before the caller sees the error.
TRYAGAIN_TRIES = (20, 0.05)


def rerouted(method: Callable) -> Callable:
    """For the read-only queries on redis-py's client: a MOVED or ASK reply
    (a slot that moved to another cluster node) updates the slot map and
    runs the query once more, on the node that serves the slot now; a
    broken connection has the map read again before the next call."""
    @functools.wraps(method)
    def run(self: "Broker", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except ResponseError as exc:
            moved = redirection(exc)
            if moved is None:
                raise
            self.nodes.learn(moved[1], moved[2])
            self.nodes.refresh()
        except CONNECTION_ERRORS:
            self.nodes.stale()
            raise
        return method(self, *args, **kwargs)
    return run


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Broker:
    """Redis access for one queue partition (`keys`): every key it names
    shares one hash tag, so one cluster slot, served by one node of
    `connection` (a Nodes; a dict of connection settings: one plain Redis)."""

    def __init__(self, connection: dict[str, Any] | Nodes, keys: Keys,
                 result_ttl: float = config.DEFAULT_RESULT_TTL, replicas: int = 0) -> None:
        self.keys = keys
        # How long scripts keep an ended job's record (include/ended.lua):
        # result_ttl, and at least the grace when someone waits on it.
        self.keep_args = (int(result_ttl * 1000), int(config.WATCHED_RECORD_GRACE * 1000))
        self.nodes = connection if isinstance(connection, Nodes) else Nodes(connection)
        self._connection = self.nodes.connection
        self.slot = slot_of(keys.prefix)
        self.scripts = {name: scripts.load(name) for name in scripts.NAMES}
        self.socket_timeout: float | None = self._connection.get("socket_timeout")
        # What this process' heartbeats register it as (heartbeat.lua): its
        # JSON once its worker started, "" before and after (Worker.start, stop).
        self.registration = ""
        # replicas > 0: a round trip that runs an ACKNOWLEDGED script ends
        # with one WAIT (see _send). Its timeout stays under the socket
        # timeout, so an unconfirmed write is told from a broken connection.
        self.replicas = replicas
        self.replica_wait = min(config.REPLICA_WAIT,
                                (self.socket_timeout or config.SOCKET_TIMEOUT) / 2)
        self._acknowledged_shas = {self.scripts[name].sha for name in ACKNOWLEDGED}
        self._scripts_sent: set = set()  # nodes this broker loaded its scripts on (replicas)

    @property
    def address(self) -> Any:
        """The node that serves this partition now (None: the single node)."""
        return self.nodes.address(self.slot)

    @property
    def lanes(self) -> ChannelPool:
        """The process' shared connections to this partition's node: submits
        borrow them as script channels, the redis-py client the rest."""
        return self.nodes.lanes(self.address)

    @property
    def shared(self) -> redis.Redis:
        return self.nodes.client(self.address)

    def channel(self, size: int = 1) -> redis.Redis:
        """A client with its own pool of `size` connections; callers wait for a
        free one instead of opening more (bounded connections per process)."""
        return self.nodes.blocking_client(self.address, size)

    def script_channel(self) -> ScriptChannel:
        """A connection of its own for one hot loop (a fetcher, a committer)."""
        return self.nodes.channel(self.address)

    def close(self, *clients: redis.Redis) -> None:
        for client in clients:
            client.connection_pool.disconnect()
        self.nodes.close()

    # -- scripts -----------------------------------------------------------

    def load_scripts(self, client: redis.Redis | None = None) -> None:
        """SCRIPT LOAD every script, so a broken one fails at start, not mid-run."""
        client = client or self.shared
        for script in self.scripts.values():
            try:
                client.script_load(script.source)
            except ResponseError as exc:
                raise ResponseError(f"{script.name}.lua: {exc}") from None

    def _send(self, client: Client, commands: list[Sequence], resend_safe: bool = False) -> list:
        """`commands` in one round trip; replies in order, error replies in
        their place. `client` None: a shared script channel. A script
        channel follows this partition to the node that serves it now.

        With `replicas`, a round trip that runs an ACKNOWLEDGED script also
        carries one WAIT, last: Redis answers it once that many replicas have
        every write of this connection so far (the scripts' included), and
        BrokerError is raised when fewer confirm within `replica_wait`. The
        scripts did run on the master then; only their copies are unsure."""
        return self._confirmed(commands, lambda sent: self._send_on(client, sent, resend_safe))

    def _send_on(self, client: Client, commands: list[Sequence], resend_safe: bool) -> list:
        try:
            if client is None:
                return self._send_shared(commands, resend_safe)
            if isinstance(client, ScriptChannel):
                if self.nodes.cluster:
                    self.nodes.point(client, self.address)
                return client.execute(commands)
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return pipe.execute(raise_on_error=False)
        except CONNECTION_ERRORS:
            self.nodes.stale()  # a dead master: its replica may serve the slot soon
            raise

    def _confirmed(self, commands: list[Sequence], execute: Callable[[list], list]) -> list:
        """execute(commands), with one WAIT last when an ACKNOWLEDGED script
        is among them and the partition has `replicas` (see _send); its reply
        is checked and taken off the replies."""
        acknowledged = self.replicas > 0 and any(
            command[0] == "EVALSHA" and command[1] in self._acknowledged_shas
            for command in commands)
        if acknowledged:
            commands = [*commands, ("WAIT", self.replicas, int(self.replica_wait * 1000))]
        replies = execute(commands)
        if acknowledged:
            self._check_confirmed(replies.pop(), replies)
        return replies

    def _check_confirmed(self, confirmed: Any, replies: list) -> None:
        """Raise unless WAIT's reply says `replicas` replicas have the writes."""
        if replies and all(isinstance(reply, Exception) for reply in replies):
            # Nothing ran: the scripts' own error says more (READONLY: a
            # demoted master); a NOSCRIPT or a redirection is sent again,
            # with a WAIT of its own. When some ran, their writes need it.
            return
        if isinstance(confirmed, Exception):
            raise confirmed  # e.g. NOPERM: the ACL user needs +wait
        if confirmed < self.replicas:
            raise UnconfirmedWriteError(
                f"Redis ran the write, but only {confirmed} of {self.replicas} replicas "
                f"confirmed it within {self.replica_wait:g} s; it may be lost if the master "
                f"fails over")

    def _send_shared(self, commands: list[Sequence], resend_safe: bool) -> list:
        """On a shared channel of this partition's node. On a cluster, a
        node that cannot be reached may have been replaced (a failover): the
        slot map is read again and, when it names another node, the call is
        sent there, if nothing of it can have run (no connection was made,
        or the commands are safe to send twice)."""
        address = self.address
        try:
            return self.nodes.lanes(address).execute(commands, resend_safe)
        except CONNECTION_ERRORS as exc:
            if not self.nodes.cluster or not (resend_safe or "connecting to" in str(exc)):
                raise
            self.nodes.stale()
            try:
                self.nodes.refresh(wait=True)
            except CONNECTION_ERRORS:
                raise exc from None
            if self.address == address:
                raise
        return self.nodes.lanes(self.address).execute(commands, resend_safe)

    def _evalsha(self, call: tuple[str, Sequence, Sequence]) -> tuple:
        name, keys, args = call
        return ("EVALSHA", self.scripts[name].sha, len(keys), *keys, *args)

    def _pipeline(self, client: Client, calls: list[tuple[str, Sequence, Sequence]],
                  before: Sequence[Sequence] = (), resend_safe: bool = False) -> list:
        """Run scripts in one round trip, after the plain commands `before`
        (their replies are dropped). redis-py's own script pipelining asks
        SCRIPT EXISTS on every execute (an extra round trip), so we send
        EVALSHA and reload only on NOSCRIPT, re-running just those calls."""
        if not calls:
            return []
        if self.replicas and self.address not in self._scripts_sent:
            # A NOSCRIPT would cost the WAIT behind it its whole timeout
            # (nothing was written): load them with the first call instead.
            self._scripts_sent.add(self.address)
            before = [*[("SCRIPT", "LOAD", script.source) for script in self.scripts.values()],
                      *before]
        replies = self._send(client, [*before, *map(self._evalsha, calls)], resend_safe)
        results = replies[len(before):]
        for reply in replies[:len(before)]:
            # A redirected wait: its script is redirected too, and followed below.
            if isinstance(reply, Exception) and redirection(reply) is None:
                raise reply
        for index, result in enumerate(results):
            if redirection(result) is not None or try_again(result):
                result = self._follow(calls[index], result)
            if isinstance(result, NoScriptError):
                # Redis restarted or SCRIPT FLUSH: NOSCRIPT means it did not run.
                script = self.scripts[calls[index][0]]
                loaded, result = self._send(client, [("SCRIPT", "LOAD", script.source),
                                                     self._evalsha(calls[index])])
                if isinstance(loaded, Exception):
                    raise loaded
            if isinstance(result, Exception):
                raise result
            results[index] = result
        return results

    def _follow(self, call: tuple[str, Sequence, Sequence], reply: Exception) -> Any:
        """Run `call` where Redis' `reply` (MOVED, ASK, TRYAGAIN) said it did
        not run: on the node a slot moved to (ASK: for this call only, while
        the slot migrates), loading the script there if that node lacks it.
        Returns the reply it got there."""
        address = self.address
        for _ in range(TRYAGAIN_TRIES[0]):
            redirected = redirection(reply)
            asking: list[Sequence] = []
            if redirected is not None:
                kind, slot, address = redirected
                if kind == "MOVED":
                    self.nodes.learn(slot, address)
                else:
                    asking = [("ASKING",)]
            elif try_again(reply):
                time.sleep(TRYAGAIN_TRIES[1])
            else:
                return reply
            script = self.scripts[call[0]]
            commands = [("SCRIPT", "LOAD", script.source), *asking, self._evalsha(call)]
            lanes = self.nodes.lanes(address)
            replies = self._confirmed(commands, lambda sent: lanes.execute(sent, False))
            loaded, reply = replies[0], replies[-1]
            if isinstance(loaded, Exception):
                raise loaded
        return reply

    def _run(self, client: Client, name: str, keys: Sequence, args: Sequence) -> Any:
        return self._pipeline(client, [(name, keys, args)])[0]

    # -- submit ------------------------------------------------------------

    @functools.cached_property
    def resend_window_ms(self) -> int:
        """How long a submit call is remembered (sent:<nonce>, submit.lua) so
        that sending it again adds nothing. ChannelPool.execute re-sends a
        submit once when its connection broke before the reply: the break
        shows within the socket timeout, then a new connection takes the
        connect timeout and a handshake bounded by the socket timeout. At
        least 25 s, the figure for greenq's defaults."""
        socket_timeout = max(self._connection.get("socket_timeout") or 0, config.SOCKET_TIMEOUT)
        connect_timeout = max(self._connection.get("socket_connect_timeout") or 0,
                              config.CONNECT_TIMEOUT)
        return int(1000 * (2 * socket_timeout + connect_timeout))

    def submit_calls(self, rows: Sequence[Sequence]) -> list[tuple]:
        """The script calls that add `rows`, each with a nonce of its own, so
        a call sent again unchanged is known for a re-send (see submit.lua)."""
        k = self.keys
        calls = []
        for chunk in _chunks(rows, config.SCRIPT_BATCH):
            args: list = [k.prefix, os.urandom(8).hex(), self.resend_window_ms]
            for row in chunk:
                args.extend(row)
                if len(row) < 9:  # no due time (runnable now), no trace
                    args.extend(("",) * (9 - len(row)))
            calls.append(("submit", (k.pending, k.locks, k.counts, k.held, k.delayed), args))
        return calls

    def add(self, rows: Sequence[Sequence], client: Client = None) -> tuple[int, list[str]]:
        """Add jobs; each row: id, task, resource ("" none), encoding, params,
        retries, coalesce ("1"/"0"), and optionally a due time ("" now,
        "+<ms>" after Redis' now, "<ms>" epoch; see submit.lua) and a trace
        (traceparent, greenq/tracing.py). Returns how many were added and each
        row's job id (the id of the job a coalescing row was merged into).
        Safe to send twice (a re-sent call adds nothing, even after its jobs
        ran), so a connection Redis closed while idle is retried once."""
        ids = [row[0] for row in rows]
        added = 0
        replies = self._pipeline(client, self.submit_calls(rows), resend_safe=True)
        for call, (count, coalesced) in enumerate(replies):
            added += count
            for index, job_id in coalesced_rows(coalesced, call):
                ids[index] = job_id
        return added, ids

    def submit(self, rows: Sequence[Sequence], client: Client = None) -> int:
        """add(), answering only how many jobs were added."""
        return self.add(rows, client)[0]

    # -- worker path -------------------------------------------------------

    def _fetch_call(self, process_id: str, max_jobs: int, default_timeout_ms: int,
                    timeouts: Sequence, limits: Sequence) -> tuple:
        k = self.keys
        return ("fetch", (k.pending, k.procs, k.beats, k.counts, k.failed, k.handoff, k.locks,
                          k.held, k.delayed, k.rates),
                (k.prefix, process_id, max_jobs, default_timeout_ms, config.PROMOTE_BATCH,
                 len(limits) // 3, *limits, *timeouts))

    def fetch(self, client: Client, process_id: str, max_jobs: int,
              default_timeout_ms: int, timeouts: Sequence, limits: Sequence = (),
              with_due: bool = False) -> tuple:
        """Lease up to `max_jobs` (fetch.lua). `timeouts`: flat task id,
        timeout ms pairs of the tasks this process knows; `limits`: flat
        task id, starts, period ms triples of their rate limits. Returns
        (rows, problems), and with `with_due` also the ms until the earliest
        delayed job is due (-1: none)."""
        jobs, problems, due = self._run(
            client, *self._fetch_call(process_id, max_jobs, default_timeout_ms, timeouts, limits))
        return (jobs, problems, due) if with_due else (jobs, problems)

    def wait_and_fetch(self, client: Client, seconds: float, process_id: str, max_jobs: int,
                       default_timeout_ms: int, timeouts: Sequence, limits: Sequence = (),
                       with_due: bool = False) -> tuple:
        """Block until a job is pending (or `seconds` pass), then fetch, in one
        round trip. The wait is a BLMOVE of the oldest pending id to the
        hand-off list, so each id wakes one waiting process (not every idle
        one), and Redis runs the fetch pipelined behind it, which leases the
        handed-off id first, the moment the wait returns. A wait that timed
        out costs one fetch that finds nothing, or leases delayed jobs that
        came due meanwhile. A delayed job's due time ends the wait through
        wake.lua (Worker._wake_for_due); `seconds` bounds it otherwise."""
        k = self.keys
        [(jobs, problems, due)] = self._pipeline(
            client, [self._fetch_call(process_id, max_jobs, default_timeout_ms, timeouts, limits)],
            before=[("BLMOVE", k.pending, k.handoff, "RIGHT", "LEFT", seconds)])
        return (jobs, problems, due) if with_due else (jobs, problems)

    def wake(self, client: Client = None) -> int:
        """Wake an idle worker if a delayed job is due (wake.lua); returns the
        ms until the earliest one is due, -1 when none waits."""
        k = self.keys
        return self._run(client, "wake", (k.delayed, k.pending, k.counts), ())

    def complete_call(self, process_id: str, groups: Sequence, drop_receipts: bool = False) -> tuple:
        """`groups`: job id, lease token, result encoding, result blob ("" both:
        none), microseconds perform ran ("": not known)."""
        k = self.keys
        return ("complete", (k.pending, k.locks, k.counts, k.held, k.metrics, k.history),
                (k.prefix, process_id, _flag(drop_receipts), *self.keep_args, *groups))

    def fail_call(self, process_id: str, groups: Sequence, drop_receipts: bool = False) -> tuple:
        """`groups`: job id, lease token, error text, "0" may retry / "1" final /
        "c" cancelled, ms a retry waits (0: at once), microseconds perform ran
        ("": not known) (see fail.lua)."""
        k = self.keys
        return ("fail", (k.pending, k.locks, k.counts, k.failed, k.held, k.delayed, k.metrics,
                         k.history),
                (k.prefix, process_id, _flag(drop_receipts), *self.keep_args, *groups))

    def heartbeat_call(self, process_id: str, leaving: bool = False) -> tuple:
        """`leaving`: also take the process out of the registry of live
        workers (a clean stop); otherwise keep it there once registered."""
        k = self.keys
        return ("heartbeat", (k.procs, k.beats, k.clock, k.workers, k.alive),
                (k.prefix, process_id, *_STALL_ARGS, "-" if leaving else self.registration,
                 _GONE_MS))

    def flush_stale_call(self, limit: int, forced: bool = False) -> tuple:
        """`forced`: reclaim even during the grace that follows a Redis stall
        (an operator's explicit call; the workers' periodic flush waits)."""
        k = self.keys
        return ("flush_stale", (k.procs, k.beats, k.pending, k.locks, k.counts, k.failed, k.clock,
                                k.held, k.delayed, k.retry_policies, k.metrics, k.history),
                (k.prefix, limit, *_STALL_ARGS, "1" if forced else "0", *self.keep_args))

    def run_batch(self, client: Client, calls: list[tuple]) -> list:
        """Several script calls (from the *_call methods) in one round trip."""
        return self._pipeline(client, calls)

    def complete(self, process_id: str, pairs: Sequence, client: Client = None) -> list:
        """Finish jobs as succeeded without a result; `pairs`: job id, lease token."""
        groups = [x for i in range(0, len(pairs), 2) for x in (pairs[i], pairs[i + 1], "", "", "")]
        return self._run(client or self.shared, *self.complete_call(process_id, groups))

    def fail(self, process_id: str, groups: Sequence, client: Client = None,
             waits: Sequence[int] | None = None) -> list:
        """fail.lua on `groups` of 4 (job id, lease token, error text, how),
        each retry waiting the ms of `waits` at its place (none: at once)."""
        count = len(groups) // 4
        waits = list(waits) if waits is not None else [0] * count
        if len(waits) != count:
            raise ValueError(f"{count} jobs, {len(waits)} waits")
        full = [x for i in range(count) for x in (*groups[4 * i:4 * i + 4], waits[i], "")]
        return self._run(client or self.shared, *self.fail_call(process_id, full))

    def heartbeat(self, process_id: str, client: Client = None, leaving: bool = False) -> list:
        return self._run(client or self.shared, *self.heartbeat_call(process_id, leaving))

    def flush_stale(self, limit: int, client: Client = None) -> list:
        """A forced flush (see flush_stale_call)."""
        return self._run(client or self.shared, *self.flush_stale_call(limit, forced=True))

    def reclaim_process(self, process_id: str, why: str, limit: int,
                        client: Client = None) -> tuple[list, int]:
        """Retry or fail now up to `limit` jobs `process_id` holds, with the
        error text `why`: its master saw it die (see reclaim_process.lua).
        Returns flush_stale's rows and how many jobs it still holds."""
        k = self.keys
        rows, left = self._run(client or self.shared, "reclaim_process",
                               (k.procs, k.beats, k.pending, k.locks, k.counts, k.failed, k.held,
                                k.delayed, k.retry_policies, k.metrics, k.history),
                               (k.prefix, process_id, why, limit, *self.keep_args))
        return rows, left

    def publish_retry_policies(self, tasks: Iterable[Any], client: Client = None) -> None:
        """Write the retry back-off of `tasks` (registry.Task) to the
        retry_policies HASH, for stale flushes in processes that do not know
        them (include/backoff.lua); a task without retry_delay has its entry
        removed. One round trip. Every process that registers a task writes
        it at start, so with two definitions of one task on a live queue
        (a rolling deploy), the last process started wins."""
        k = self.keys
        commands: list[Sequence] = []
        for task in tasks:
            if task.retry_delay:
                policy = (f"{int(task.retry_delay * 1000)} {task.retry_backoff!r} "
                          f"{int(task.retry_delay_max * 1000)}")
                commands.append(("HSET", k.retry_policies, task.id, policy))
            else:
                commands.append(("HDEL", k.retry_policies, task.id))
        if not commands:
            return
        for reply in self._send(client or self.shared, commands):
            if isinstance(reply, Exception):
                raise reply

    def give_back_unknown_call(self, process_id: str, groups: Sequence, grace_ms: int,
                               drop_receipts: bool = False) -> tuple:
        """Give back jobs of tasks this process does not know, for a worker
        that does; `groups`: job id, lease token, error text for a job whose
        grace is over (see give_back_unknown.lua)."""
        k = self.keys
        first, longest = config.UNKNOWN_TASK_BACKOFF
        return ("give_back_unknown", (k.delayed, k.counts, k.pending, k.locks, k.failed, k.held),
                (k.prefix, process_id, _flag(drop_receipts), grace_ms, int(first * 1000),
                 int(longest * 1000), *self.keep_args, *groups))

    def give_back_unknown(self, process_id: str, groups: Sequence, grace_ms: int,
                          client: Client = None) -> list:
        return self._run(client or self.shared,
                         *self.give_back_unknown_call(process_id, groups, grace_ms))

    def give_back_call(self, process_id: str, pairs: Sequence, drop_receipts: bool = False) -> tuple:
        k = self.keys
        return ("give_back", (k.pending, k.counts, k.locks, k.held),
                (k.prefix, process_id, _flag(drop_receipts), *self.keep_args, *pairs))

    def drop_receipts(self, process_id: str, client: Client = None) -> None:
        """Forget this process' finish receipts (it saw every reply)."""
        [deleted] = self._send(client or self.shared, [("DEL", self.keys.receipts(process_id))])
        if isinstance(deleted, Exception):
            raise deleted

    def give_back(self, process_id: str, pairs: Sequence, client: Client = None) -> list:
        return self._run(client or self.shared, *self.give_back_call(process_id, pairs))

    def note(self, process_id: str, groups: Sequence, client: Client = None) -> list:
        """Leave error texts for the stale flush on jobs `process_id` runs;
        `groups`: job id, lease token, text (see note.lua)."""
        ids, args = groups[0::3], [x for i in range(0, len(groups), 3) for x in groups[i + 1:i + 3]]
        return self._run(client or self.shared, "note", [self.keys.job(i) for i in ids],
                         (process_id, *args))

    @rerouted
    def owned(self, process_id: str, client: redis.Redis | None = None) -> list[tuple[str, str]]:
        """(job id, lease token) of every job Redis says `process_id` holds."""
        client = client or self.shared
        ids = [i.decode() for i in client.zrange(self.keys.owned(process_id), 0, -1)]
        if not ids:
            return []
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.keys.job(job_id), "lease")
        return [(job_id, (lease or b"").decode()) for job_id, lease in zip(ids, pipe.execute())]

    # -- one job ----------------------------------------------------------

    def cancel(self, job_id: str) -> int:
        """1 cancelled (or under way, for a running job), 0 ended or unknown (cancel.lua)."""
        return self.cancel_many([job_id])[0]

    def cancel_many(self, job_ids: Sequence[str]) -> list[int]:
        """cancel() of each id, in one round trip (a bulk cancel)."""
        k = self.keys
        keys = (k.locks, k.counts, k.pending, k.held, k.delayed, k.metrics, k.history)
        return self._pipeline(self.shared, [("cancel", keys, (k.prefix, job_id, *self.keep_args))
                                            for job_id in job_ids])

    @rerouted
    def record(self, job_id: str) -> dict[bytes, bytes]:
        """A job's record as it is now, in one round trip ({} when there is none).
        Raises redis.ResponseError (WRONGTYPE) when the key is not a hash."""
        return self.shared.hgetall(self.keys.job(job_id))

    # -- wait ----------------------------------------------------------------

    def watch(self, job_ids: Sequence[str]) -> list[list | None]:
        """watch.lua for each id, in one round trip: None, no record; [] not
        ended yet (now marked, so its end is published on keys.ended); else
        the ended record as HGETALL's flat list (record_from_flat makes it a
        dict). Safe to send twice: a connection Redis closed while idle is
        retried once."""
        ended = sorted(ENDED)
        return self._pipeline(None, [("watch", (self.keys.job(i),), ended) for i in job_ids],
                              resend_safe=True)

    def subscribe_ended(self) -> redis.client.PubSub:
        """A pub/sub connection of its own (a pool of one), with SUBSCRIBE to
        keys.ended sent; the caller reads the confirmation, then the ids."""
        pubsub = self.channel(1).pubsub()
        pubsub.subscribe(self.keys.ended)
        return pubsub

    @rerouted
    def job_records(self, job_ids: Sequence[str]) -> list[dict]:
        """The records of `job_ids` (HGETALL, bytes keys; {} when gone), in
        one round trip."""
        replies = self._send(None, [("HGETALL", self.keys.job(i)) for i in job_ids],
                             resend_safe=True)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [record_from_flat(reply) for reply in replies]

    # -- failed queue and inspection --------------------------------------

    def retry_failed(self, limit: int) -> int:
        k = self.keys
        return self._run(self.shared, "retry_failed",
                         (k.failed, k.pending, k.locks, k.counts, k.held),
                         (k.prefix, limit))

    def delete_failed(self, limit: int) -> int:
        k = self.keys
        return self._run(self.shared, "delete_failed", (k.failed,), (k.prefix, limit))

    def failed_select(self, mode: str, *, job_ids: Sequence[str] = (), task_id: str = "",
                      cursor: int | None = None, limit: int = 0) -> tuple[int, int, bool]:
        """Retry or delete (`mode`) the failed jobs that match (see
        failed_select.lua): the `job_ids` given (at most config.SCRIPT_BATCH
        per call), those of them whose task is `task_id` too; or, with a
        `cursor`, those of task `task_id` among `limit` slots of the failed
        list from there. Returns (jobs acted on, next cursor, done)."""
        k = self.keys
        how = ("walk", cursor, limit) if cursor is not None else ("ids", *job_ids)
        acted, next_cursor, done = self._run(
            self.shared, "failed_select", (k.failed, k.pending, k.locks, k.counts, k.held),
            (k.prefix, mode, task_id, *how))
        return acted, next_cursor, bool(done)

    def browse(self, name: str, keys: Sequence[str], args: Sequence) -> Any:
        """Run the read-only script browse_<name>.lua (greenq/browse.py's
        dashboard pages); safe to send twice."""
        return self._pipeline(None, [(f"browse_{name}", keys, args)], resend_safe=True)[0]

    @rerouted
    def redis_now_ms(self) -> int:
        """Redis' clock, epoch ms."""
        seconds, micros = self.shared.time()
        return seconds * 1000 + micros // 1000

    @rerouted
    def stats(self) -> dict[str, int]:
        k = self.keys
        live_since = self.redis_now_ms() - _GONE_MS
        pipe = self.shared.pipeline(transaction=True)
        pipe.llen(k.pending).llen(k.handoff).llen(k.failed)
        pipe.hmget(k.counts, "active", "waiting", "skipped").hlen(k.locks).zcard(k.delayed)
        # Live processes are few (the rest are pruned); ZRANGEBYSCORE rather
        # than ZCOUNT keeps the documented ACL (docs/acl.md) as it was.
        pipe.zrangebyscore(k.alive, live_since, "+inf")
        pending, handed_off, failed, (active, waiting, skipped), locked, scheduled, live = \
            pipe.execute()
        # Cancelled ids stay in pending until a fetch skips them (cancel.lua).
        return {"pending": max(0, pending + handed_off - int(skipped or 0)), "active": int(active or 0), "waiting": int(waiting or 0),
                "failed": failed, "locked_resources": locked, "scheduled": scheduled,
                "workers": len(live)}

    @rerouted
    def processes(self, now_ms: int, limit: int) -> list[dict]:
        """The live worker processes (heard from within PROCESS_GONE_AFTER),
        at most `limit`, by host and pid: what each registered (heartbeat.lua)
        and how many jobs Redis says it holds now."""
        client, k = self.shared, self.keys
        seen = client.zrangebyscore(k.alive, now_ms - _GONE_MS, "+inf", start=0, num=limit,
                                    withscores=True)
        if not seen:
            return []
        pipe = client.pipeline(transaction=False)
        pipe.hmget(k.workers, [proc for proc, _beat in seen])
        for proc, _beat in seen:
            pipe.zcard(k.owned(proc.decode()))
        about, *busy = pipe.execute()
        processes = []
        for (proc, beat), blob, held in zip(seen, about, busy):
            try:
                info = json.loads(blob) if blob else {}
            except ValueError:
                info = {}
            started = info.pop("started_ms", None)
            processes.append({
                **info, "id": proc.decode(errors="replace"), "busy": held,
                "last_heartbeat": (now_ms - int(beat)) / 1000,
                "started": None if started is None else started / 1000,
                "age": None if started is None else (now_ms - started) / 1000})
        processes.sort(key=lambda p: (str(p.get("host")), p.get("pid") or 0, p["id"]))
        return processes

    @rerouted
    def ping(self) -> None:
        """Raise what redis-py raises when Redis does not answer."""
        self.shared.ping()

    @rerouted
    def queue_exists(self) -> bool:
        """Whether this queue was ever used: a submitted job, a schedule or a
        worker's first call leaves at least one of its fixed keys behind (`counts`
        and `clock` stay for good). One EXISTS, no scan of the keyspace."""
        k = self.keys
        return self.shared.exists(k.pending, k.handoff, k.locks, k.counts, k.failed, k.procs,
                                  k.beats, k.clock, k.schedules) > 0

    @rerouted
    def failed_records(self, limit: int) -> list[tuple[bytes, dict]]:
        """(id, record) of the `limit` oldest failed jobs."""
        ids = self.shared.lrange(self.keys.failed, 0, limit - 1) if limit > 0 else []
        return self.records(ids)

    @rerouted
    def failed_tasks(self, start: int, count: int) -> list[tuple[bytes, bytes | None]]:
        """(id, task id) of `count` failed jobs from index `start`: what a
        listing filtered by task reads before it fetches the records."""
        ids = self.shared.lrange(self.keys.failed, start, start + count - 1)
        if not ids:
            return []
        pipe = self.shared.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.keys.job(job_id.decode()), "task")
        return list(zip(ids, pipe.execute(raise_on_error=False)))

    def records(self, ids: Sequence[bytes]) -> list[tuple[bytes, dict]]:
        """(id, HGETALL) of each of `ids`, in one round trip."""
        if not ids:
            return []
        return list(zip(ids, self.job_records([job_id.decode() for job_id in ids])))

    @rerouted
    def inspect(self, limit: int) -> dict:
        """Live worker processes, running jobs by process and locked resources
        with their queues, for an operator; at most `limit` of each (reads only)."""
        client, k = self.shared, self.keys
        now_ms = self.redis_now_ms()
        processes = self.processes(now_ms, limit)
        running = []
        for proc, beat in client.hgetall(k.beats).items():
            for job_id, timeout in client.zrange(k.owned(proc.decode()), 0, limit - len(running) - 1,
                                                 withscores=True):
                task, res, started, attempts = client.hmget(
                    k.job(job_id.decode()), "task", "res", "started", "attempts")
                running.append({
                    "id": job_id.decode(), "process": proc.decode(),
                    "task": (task or b"").decode(errors="replace"),
                    "resource": res.decode(errors="replace") if res else None,
                    "age": (now_ms - int(started or now_ms)) / 1000,
                    "last_heartbeat": (now_ms - int(beat)) / 1000,
                    "timeout": timeout / 1000, "attempts": int(attempts or 0)})
            if len(running) >= limit:
                break
        locked = []
        for resource, holder in client.hscan_iter(k.locks, count=limit):
            locked.append({"resource": resource.decode(errors="replace"), "holder": holder.decode(),
                           "waiting": client.llen(k.prefix.encode() + b"wait:" + resource)})
            if len(locked) >= limit:
                break
        locked.sort(key=lambda item: -item["waiting"])
        return {"processes": processes, "running": running, "locked": locked}

    @rerouted
    def server_info(self) -> dict:
        return self.shared.info("server")

    # -- schedules -----------------------------------------------------------

    def save_schedule(self, name: str, next_ms: int, timing: dict[str, str],
                      definition: Sequence) -> tuple[int, int]:
        """Create or replace schedule `name` (save_schedule.lua). `timing`:
        Timing.fields(); `definition`: task, resource ("" default),
        encoding, params blob, retries. Returns (1 created / 2 new timing /
        3 timing kept, the next fire time ms)."""
        k = self.keys
        outcome, stored = self._run(
            self.shared, "save_schedule", (k.schedules,),
            (k.prefix, name, next_ms, timing["cron"], timing["every"], timing["tz"], *definition))
        return int(outcome), int(stored)

    def remove_schedule(self, name: str) -> bool:
        k = self.keys
        return self._run(self.shared, "remove_schedule", (k.schedules,), (k.prefix, name)) == 1

    def fire_schedule(self, name: str, fire_ms: int, next_ms: int, timing: dict[str, str],
                      job_id: str, client: Client = None) -> tuple[int, str | None]:
        """Fire the occurrence `fire_ms` of `name` (fire_schedule.lua).
        Returns (1, job id) fired; (0, None) not ours to fire; (-1, None)
        not due yet; (-2, None) `next_ms` is not after Redis' now."""
        k = self.keys
        reply = self._run(client or self.shared, "fire_schedule",
                          (k.schedules, k.pending, k.locks, k.counts, k.held),
                          (k.prefix, name, fire_ms, next_ms, timing["cron"], timing["every"],
                           timing["tz"], job_id))
        if reply[0] == 1:
            job = reply[1]
            return 1, job.decode() if isinstance(job, bytes) else str(job)
        return int(reply[0]), None

    @rerouted
    def due_schedules(self, limit: int, client: redis.Redis | None = None
                      ) -> tuple[int, list[tuple[str, int]]]:
        """Redis' now (ms) and the `limit` schedules that fire first, with
        their next fire time ms, soonest first, in one round trip (TIME
        first: bench W6 tells this read from the heartbeat tick by it)."""
        pipe = (client or self.shared).pipeline(transaction=False)
        pipe.time().zrange(self.keys.schedules, 0, limit - 1, withscores=True)
        (seconds, micros), entries = pipe.execute()
        return (seconds * 1000 + micros // 1000,
                [(name.decode(), int(score)) for name, score in entries])

    @rerouted
    def schedule_definitions(self, names: Sequence[str]) -> list[dict[bytes, bytes]]:
        """HGETALL of each schedule's definition hash, in one round trip."""
        if not names:
            return []
        pipe = self.shared.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.schedule(name))
        return pipe.execute()

    @rerouted
    def all_schedules(self, batch: int = 1000) -> list[tuple[str, int, dict[bytes, bytes]]]:
        """(name, next fire ms, definition) of every schedule, soonest first."""
        found: list[tuple[str, int, dict[bytes, bytes]]] = []
        start = 0
        while True:
            entries = self.shared.zrange(self.keys.schedules, start, start + batch - 1,
                                         withscores=True)
            names = [name.decode() for name, _ in entries]
            for name, (_, score), definition in zip(names, entries,
                                                   self.schedule_definitions(names)):
                if definition:
                    found.append((name, int(score), definition))
            if len(entries) < batch:
                return found
            start += batch

