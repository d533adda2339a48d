"""Script channels: the connections of the hot paths (submit, fetch, the
committer's round trips), written and read through redis-py's Connection
directly.

redis-py's per-command path (pool checkout with a readiness poll, retry
wrapper, response callbacks, metrics) costs about 50 µs a call under gevent,
a third of a submit's round trip. The hot paths only send EVALSHA (and the
fetcher's BLMOVE) and need no response callbacks, so a channel writes all of
a round trip's commands in one send and reads the raw replies. Connecting,
TLS, AUTH and error replies are still redis-py's Connection's business.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import socket
import time
from typing import Any, Iterator, Sequence

import gevent
import redis
from redis.exceptions import ReadOnlyError, ResponseError

from . import config

try:
    from hiredis import pack_command
except ImportError:  # redis-py packs then
    pack_command = None

# How long a shared channel polls its socket for a reply before it waits in
# gevent's hub (see await_reply).
SPIN_SECONDS = 0.0001


def pack(connection: redis.connection.AbstractConnection,
         commands: Sequence[Sequence[Any]]) -> list[bytes]:
    """`commands` in Redis' protocol, as send_packed_command takes them:
    one buffer, one write. hiredis packs a whole command in C; redis-py's
    own packing first copies every argument through a generator (about
    0.2 us each: a commit of 100 jobs has 500). An argument hiredis cannot
    pack (TypeError) gets redis-py's packing and its error."""
    if pack_command is not None:
        try:
            return [b"".join([pack_command(tuple(command)) for command in commands])]
        except TypeError:
            pass
    return connection.pack_commands(commands)


class OutageReplies:
    """Mixed into every connection class greenq uses: an error reply that
    says this node stopped being a writable master is an outage, not a
    refusal. The connection closes (the next connect may find the new
    master: a Sentinel connection asks the sentinels) and the call raises
    redis.ConnectionError, which the worker loops ride out with back-off
    and report once per outage, and the committer answers by keeping its
    finishes to send again. A job never fails for it.

    READONLY: the node was made a replica (a failover, REPLICAOF) and a
    write reached it; a script gets it at its first write, so nothing of
    the call was done. UNBLOCKED: the same change ended a blocking read
    (the fetcher's BLMOVE)."""

    outage_codes: tuple[str, ...] = ("READONLY", "UNBLOCKED")

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ResponseError as exc:
            if not (isinstance(exc, ReadOnlyError) or str(exc).startswith(self.outage_codes)):
                raise
            where = self._host_error()  # type: ignore[attr-defined]
            self.disconnect()  # type: ignore[attr-defined]
            code = "READONLY" if isinstance(exc, ReadOnlyError) else str(exc).split(" ", 1)[0]
            raise redis.ConnectionError(
                f"{where} no longer takes writes ({code}: {exc})") from None


@functools.lru_cache(maxsize=None)
def outage_aware(connection_class: type) -> type:
    """`connection_class` with OutageReplies mixed in (itself when it has it)."""
    if issubclass(connection_class, OutageReplies):
        return connection_class
    return type(connection_class.__name__, (OutageReplies, connection_class),
                {"__module__": __name__, "__doc__": connection_class.__doc__})


def await_reply(connection: redis.connection.AbstractConnection) -> None:
    """Poll `connection`'s socket for the reply to what was just sent, for
    up to SPIN_SECONDS, when no other greenlet is ready to run.

    A reply waited for in the hub (epoll) wakes this process on a CPU that
    went idle meanwhile, and on a VM that wake-up costs more than Redis
    takes to answer: `python -m bench.round_trip` here, PING on a socket
    14,300/s waited for, 47,400/s polled. A submit from a request handler
    is such a lone round trip. Not under load (other greenlets ready: the
    hub has work, so it waits there as before), not in an unpatched
    program (its socket has no OS socket underneath to poll), and never
    long: past SPIN_SECONDS, or on any surprise, read_response waits as
    usual."""
    sock = getattr(connection._sock, "_sock", None)  # the OS socket under gevent's
    if sock is None or len(_callbacks()):
        return
    deadline = time.perf_counter() + SPIN_SECONDS
    while True:
        try:
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            return  # a byte of the reply (or b"": closed, which the read reports)
        except BlockingIOError:
            # The CPU stays awake, yet a process woken meanwhile (a worker
            # that Redis just handed a job) runs here instead of waiting.
            _yield_cpu()
        except OSError:
            return
        if time.perf_counter() > deadline:
            return


_yield_cpu = getattr(os, "sched_yield", lambda: None)


def _callbacks() -> Any:
    """The hub's pending callbacks (greenlets about to run), or () without gevent's loop."""
    try:
        return gevent.get_hub().loop._callbacks
    except Exception:  # noqa: BLE001 - another loop implementation: never spin
        return (None,)


class ScriptChannel:
    """One connection, used by one greenlet (or thread) at a time.
    `spin`: poll for each reply for a moment first (await_reply)."""

    __slots__ = ("connection", "spin")

    def __init__(self, connection: redis.connection.AbstractConnection, spin: bool = False) -> None:
        self.connection = connection
        self.spin = spin

    def execute(self, commands: Sequence[Sequence[Any]]) -> list:
        """Send `commands` in one write and return their replies in order;
        an error reply is returned in its place, like redis-py's
        ``pipeline.execute(raise_on_error=False)``. A broken connection
        raises (redis-py's Connection closes itself first, so the next call
        reconnects)."""
        connection = self.connection
        connection.connect()  # a no-op while connected
        connection.send_packed_command(pack(connection, commands), check_health=False)
        if self.spin:
            await_reply(connection)
        replies: list = []
        for _ in commands:
            try:
                replies.append(connection.read_response())
            except ResponseError as exc:  # read in full: the connection stays in step
                replies.append(exc)
        return replies

    def disconnect(self) -> None:
        self.connection.disconnect()


class ChannelPool(redis.BlockingConnectionPool):
    """The process' shared connections, at most `size`: redis-py's client
    (queries, admin calls) checks them out as usual, and the hot paths borrow
    them as script channels. A caller waits for a free one for at most the
    socket timeout.

    redis-py's pool does the bounding and the waiting: its queue is the
    standard library's, so a connection freed in one thread wakes a waiter in
    another in an unpatched program, and a greenlet in a patched one; it
    opens a connection only for a free slot, and after a fork starts afresh.
    `borrow` skips only the readiness poll of `get_connection` (a select call,
    about 20 us under gevent): a channel reads every reply it asks for, and a
    connection Redis closed while idle shows on the write (see `execute`)."""

    def __init__(self, connection_kwargs: dict[str, Any], size: int) -> None:
        super().__init__(max_connections=size, timeout=config.SOCKET_TIMEOUT, **connection_kwargs)

    def new_channel(self) -> ScriptChannel:
        """A channel of its own, outside the shared ones (a fetcher, a committer)."""
        return ScriptChannel(self.connection_class(**self.connection_kwargs))

    @contextlib.contextmanager
    def borrow(self) -> Iterator[ScriptChannel]:
        self._checkpid()
        try:
            connection = self.pool.get(timeout=self.timeout)  # None: a slot to open one in
        except queue.Empty:
            raise redis.ConnectionError(
                f"no free Redis connection within {self.timeout:g} s "
                f"({self.max_connections} in use)") from None
        try:
            if connection is None:
                connection = self.make_connection()
            yield ScriptChannel(connection, spin=True)
        finally:
            self.pool.put_nowait(connection)

    def execute(self, commands: Sequence[Sequence[Any]], resend_safe: bool) -> list:
        """Run `commands` on a shared channel. `resend_safe` (the commands
        change nothing twice, e.g. a submit keyed by its job ids): a broken
        connection that was open before the call is tried once more on a new
        one, since Redis closes idle connections (its `timeout` setting, a
        restart) and only a write shows it."""
        with self.borrow() as channel:
            # redis-py >= 6 calls this `is_connected`; greenq supports 5.0 too.
            was_open = channel.connection._sock is not None
            try:
                return channel.execute(commands)
            except redis.ConnectionError:
                channel.disconnect()
                if not (resend_safe and was_open):
                    raise
            return channel.execute(commands)
