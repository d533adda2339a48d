"""wait(): one listener per GreenQueue, so that any number of waiting
greenlets or threads share one pub/sub connection and poll nothing.

A waiter registers a slot for its job id, makes sure the listener is
subscribed to the queue's `ended` channel, then runs watch.lua: a job that
already ended comes back at once; otherwise its record is now marked, and
the script that ends the job publishes the id. The listener reads the
records of the ids it hears in one pipelined round trip and hands each
waiter of an ended job its Job.

What could make a waiter miss its job's end, and what covers it:
- an end between the check and the subscription: the subscription comes
  first, the check second;
- ids published while the pub/sub connection was down (Redis restarted, the
  connection was killed): after every re-subscription the listener runs
  watch.lua again for every id waited on;
- a record that expired or was deleted by hand (nothing is published): a
  sweep every SWEEP_INTERVAL runs watch.lua for every id waited on.

The listener is a `threading.Thread`: a greenlet under gevent's monkey-
patching, an OS thread in a program without it (a threaded web server, a
script); the same code serves both.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import os
import socket
import threading
import time
from typing import Any, Callable

import msgpack
import redis
from redis.backoff import EqualJitterBackoff

from . import config
from .broker import REDIS_TROUBLE, record_from_flat
from .errors import BrokerError, JobNotFoundError, ParamsError, StateError, WaitTimeout
from .job import ENDED, Job, job_from_record, text

log = logging.getLogger(__name__)

# Every waiting id is checked again this often (watch.lua, pipelined): a
# record deleted by hand or expired publishes nothing, and this bounds how
# long its waiters take to learn it. One round trip per SWEEP_BATCH ids per
# interval per process, however many waiters share an id; nothing while no
# one waits. The sweep also PINGs the pub/sub connection, and a connection
# that stays silent for an interval plus the socket timeout is replaced.
SWEEP_INTERVAL = 10.0
SWEEP_BATCH = 1000
# With nobody waiting this long, the listener closes its connection and its
# thread ends; the next wait() starts them again (one round trip more).
IDLE_STOP = 30.0
# Ids read off the connection before their records are fetched (one round
# trip for the batch).
MESSAGE_BATCH = 1000
# First byte of a message that carries the record (msgpack's 2-element
# array; no UTF-8 text starts with it, so a bare id never does).
INLINE_MARK = b"\x92"
# How long close() waits for the listener thread to end.
CLOSE_JOIN = 2.0


def check_timeout(timeout: Any) -> float | None:
    """wait()'s timeout as seconds, None for no limit; refused before
    anything is sent."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError("timeout must be a number of seconds or None, "
                        f"not {type(timeout).__name__}")
    seconds = float(timeout)
    if math.isnan(seconds) or seconds < 0:
        raise ParamsError(f"timeout must be >= 0 seconds (or None: no limit), not {timeout!r}")
    return None if math.isinf(seconds) else seconds


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class _Slot:
    """One wait() call: set once, with a Job or the error to raise."""

    __slots__ = ("event", "job", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.job: Job | None = None
        self.error: BaseException | None = None


class Listener:
    """The waiters of one queue in this process, and the thread that reads
    the `ended` channel for them."""

    def __init__(self, broker: Callable[[], Any], socket_timeout: float | None,
                 max_params_bytes: int) -> None:
        # The queue's partitions (partitions.Partitions, or a Broker: the
        # same calls), looked up at first use: the queue learns how many
        # partitions it has from Redis then.
        self._partitions = broker
        self._max_params_bytes = max_params_bytes
        self._socket_timeout = socket_timeout or config.SOCKET_TIMEOUT
        self._reset()

    @property
    def _broker(self) -> Any:
        return self._partitions()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # Notified when the subscription comes up, fails, or at close().
        self._changed = threading.Condition(self._lock)
        self._slots: dict[str, list[_Slot]] = {}
        self._idle_since = time.monotonic()
        self._thread: threading.Thread | None = None
        self._pubsub: redis.client.PubSub | None = None
        self._subscribed = False
        self._failures = 0          # subscription attempts that failed, ever
        self._failure: BaseException | None = None
        self._closed = False
        self._stop = threading.Event()  # cuts the listener's back-off short at close()

    # -- the waiter's side ---------------------------------------------------

    def wait(self, job_id: str, timeout: float | None) -> Job:
        """See GreenQueue.wait; `timeout` already checked (check_timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        slot = _Slot()
        if self._pid != os.getpid():
            self._reset()  # a child inherited this listener: its thread is the parent's
        with self._lock:
            if self._closed:
                raise StateError("wait() on a queue that was shut down")
            self._slots.setdefault(job_id, []).append(slot)
            if self._thread is None:
                self._start()
        try:
            subscribed = self._subscription(deadline)
            # Only now, with the subscription in place: an end that comes
            # after this check is published to a listener that hears it.
            [reply] = self._broker.watch([job_id])
            if reply is None:
                raise JobNotFoundError(f"no job {job_id!r} (unknown id, or its record expired)")
            if reply:
                return self._job(job_id, record_from_flat(reply))
            if subscribed:
                slot.event.wait(_left(deadline))
        finally:
            if not self._forget(job_id, slot):
                # The listener took the slot and is filling it right now.
                slot.event.wait()
        if slot.error is not None:
            raise slot.error
        if slot.job is not None:
            return slot.job
        raise WaitTimeout(f"job {job_id!r} did not end within {timeout:g} s")

    def _subscription(self, deadline: float | None) -> bool:
        """Whether the listener is subscribed, waiting for it until
        `deadline`; raises when its next attempt fails or at close()."""
        with self._changed:
            failures = self._failures
            while not self._subscribed:
                if self._closed:
                    raise StateError("the queue was shut down during wait()")
                if self._failures != failures:
                    failure = self._failure
                    raise BrokerError(f"wait() cannot subscribe to the queue's `ended` channel: "
                                      f"{type(failure).__name__}: {failure}") from failure
                left = _left(deadline)
                if left == 0:
                    return False
                self._changed.wait(left)
            return True

    def _forget(self, job_id: str, slot: _Slot) -> bool:
        """Take `slot` out; False when the listener already took it."""
        with self._lock:
            slots = self._slots.get(job_id, [])
            if not any(s is slot for s in slots):
                return False
            slots[:] = [s for s in slots if s is not slot]
            if not slots:
                del self._slots[job_id]
                if not self._slots:
                    self._idle_since = time.monotonic()
            return True

    def _job(self, job_id: str, rec: dict) -> Job:
        return job_from_record(job_id, rec, self._max_params_bytes)

    def _resolve(self, job_id: str, outcome: Callable[[], Job | BaseException]) -> None:
        """Wake every waiter of `job_id`; each gets its own Job (or error)
        from `outcome`, so no two callers share a mutable object."""
        with self._lock:
            slots = self._slots.pop(job_id, [])
            if slots and not self._slots:
                self._idle_since = time.monotonic()
        for slot in slots:
            try:
                result = outcome()
                if isinstance(result, BaseException):
                    slot.error = result
                else:
                    slot.job = result
            finally:
                slot.event.set()

    # -- the listener thread ---------------------------------------------------

    def _start(self) -> None:
        """Under the lock, with no listener thread."""
        self._subscribed = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="greenq-wait-listener",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        first, longest = config.RECONNECT_BACKOFF
        backoff = EqualJitterBackoff(cap=longest, base=first)
        failures = 0         # attempts in a row that failed
        was_subscribed = False
        while True:
            pubsub = None
            try:
                pubsub = self._broker.subscribe_ended()
                with self._lock:
                    self._pubsub = pubsub
                if self._closed:
                    return
                self._confirm(pubsub)
                if failures:
                    log.warning("wait(): pub/sub connection to Redis back")
                failures = 0
                self._serve(pubsub, resubscribed=was_subscribed)
                return  # closed, or idle
            except Exception as exc:  # noqa: BLE001 - waiters must never hang on a bug
                if self._closed:
                    return
                if not isinstance(exc, REDIS_TROUBLE):
                    log.exception("wait(): the listener failed; starting it again")
                elif failures == 0:
                    log.warning("wait(): no pub/sub connection to Redis (%s: %s); retrying",
                                type(exc).__name__, exc)
                with self._changed:
                    was_subscribed = was_subscribed or self._subscribed
                    self._subscribed = False
                    self._failures += 1
                    self._failure = exc
                    self._changed.notify_all()
                    if not self._slots:
                        self._thread = None  # nobody to reconnect for
                        return
                pause = backoff.compute(min(failures, 32))
                failures += 1
            finally:
                if pubsub is not None:
                    with self._lock:
                        if self._pubsub is pubsub:
                            self._pubsub = None
                    pubsub.close()
                    pubsub.connection_pool.disconnect()
            if self._stop.wait(pause):
                return

    def _serve(self, pubsub: redis.client.PubSub, resubscribed: bool) -> None:
        """Hand out the ids heard until close() or idleness; raises on
        any trouble with Redis (the caller reconnects)."""
        with self._changed:
            self._subscribed = True
            self._changed.notify_all()
        if resubscribed:
            self._sweep()  # ids published while the connection was down were lost
        heard = time.monotonic()
        next_sweep = heard + SWEEP_INTERVAL
        while not self._closed:
            message = pubsub.get_message(timeout=max(0.0, next_sweep - time.monotonic()))
            if message is not None:
                heard = time.monotonic()
                ids = self._ids(message)
                while len(ids) < MESSAGE_BATCH:
                    message = pubsub.get_message(timeout=0)
                    if message is None:
                        break
                    ids.extend(self._ids(message))
                if ids:
                    self._deliver(ids)
            now = time.monotonic()
            if now >= next_sweep:
                if self._idle(now):
                    return
                if now - heard > SWEEP_INTERVAL + self._socket_timeout:
                    raise redis.ConnectionError("the pub/sub connection went silent")
                pubsub.ping()  # its answer counts as heard
                self._sweep()
                next_sweep = now + SWEEP_INTERVAL

    def _confirm(self, pubsub: redis.client.PubSub) -> None:
        deadline = time.monotonic() + self._socket_timeout
        while True:
            message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message["type"] == "subscribe":
                return
            if time.monotonic() >= deadline:
                raise redis.TimeoutError("Redis did not confirm SUBSCRIBE")

    def _idle(self, now: float) -> bool:
        """Stop (the thread ends) when nobody waited for IDLE_STOP."""
        with self._lock:
            if self._slots or now - self._idle_since < IDLE_STOP:
                return False
            self._thread = None
            self._subscribed = False
            return True

    def _ids(self, message: dict) -> list[str]:
        """The ids in `message` whose records must still be read; a record
        that came inline (include/ended.lua) wakes its waiters here."""
        if message["type"] != "message":
            return []  # a pong, a (re-)subscription
        data = message["data"]
        if not data.startswith(INLINE_MARK):
            return [text(data) or ""]
        try:
            raw_id, flat = msgpack.unpackb(data, raw=True)
            job_id, rec = text(raw_id) or "", record_from_flat(flat)
        except Exception:  # noqa: BLE001 - not ours to judge; nobody waits on garbage
            log.warning("wait(): a message on the ended channel that is not greenq's; ignored")
            return []
        with self._lock:
            waited = job_id in self._slots
        if waited and text(rec.get(b"state")) in ENDED:
            self._resolve(job_id, functools.partial(self._job, job_id, rec))
        return []

    def _deliver(self, ids: list[str]) -> None:
        """Ids heard on the channel: read the records of those waited on here,
        in one round trip, and wake the waiters of each that ended."""
        with self._lock:
            wanted = [job_id for job_id in dict.fromkeys(ids) if job_id in self._slots]
        if not wanted:
            return  # other processes' waiters
        for job_id, rec in zip(wanted, self._broker.job_records(wanted)):
            if not rec:
                self._resolve(job_id, functools.partial(self._gone, job_id))
            elif text(rec.get(b"state")) in ENDED:
                self._resolve(job_id, functools.partial(self._job, job_id, rec))
            # else: back in the queue already (retried from the failed queue)

    def _sweep(self) -> None:
        """watch.lua again for every id waited on, SWEEP_BATCH per round trip."""
        with self._lock:
            ids = list(self._slots)
        for start in range(0, len(ids), SWEEP_BATCH):
            chunk = ids[start:start + SWEEP_BATCH]
            for job_id, reply in zip(chunk, self._broker.watch(chunk)):
                if reply is None:
                    self._resolve(job_id, functools.partial(self._gone, job_id))
                elif reply:
                    rec = record_from_flat(reply)
                    self._resolve(job_id, functools.partial(self._job, job_id, rec))

    @staticmethod
    def _gone(job_id: str) -> JobNotFoundError:
        return JobNotFoundError(f"job {job_id!r} was deleted (or its record expired) during wait()")

    # -- shutdown -----------------------------------------------------------------

    def close(self) -> None:
        """Wake every waiter with StateError, stop the thread, close its
        connection. Safe to call twice."""
        if self._pid != os.getpid():
            self._reset()  # the thread and connection are the parent's
        with self._changed:
            self._closed = True
            slots, self._slots = self._slots, {}
            thread, pubsub = self._thread, self._pubsub
            self._changed.notify_all()
        self._stop.set()
        for waiting in slots.values():
            for slot in waiting:
                slot.error = StateError("the queue was shut down during wait()")
                slot.event.set()
        if pubsub is not None:
            _interrupt(pubsub)
        if thread is not None and thread is not threading.current_thread():
            thread.join(CLOSE_JOIN)


def _interrupt(pubsub: redis.client.PubSub) -> None:
    """End the listener's blocking read now, from another thread or
    greenlet: shutdown(2) wakes a read blocked on that socket in both (the
    reader then sees a closed connection and cleans up in its own thread)."""
    connection = pubsub.connection
    sock = getattr(connection, "_sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed
