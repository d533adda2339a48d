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
import queue
from typing import Any, Iterator, Sequence

import redis
from redis.exceptions import ResponseError

from . import config


class ScriptChannel:
    """One connection, used by one greenlet (or thread) at a time."""

    __slots__ = ("connection",)

    def __init__(self, connection: redis.connection.AbstractConnection) -> None:
        self.connection = connection

    def execute(self, commands: Sequence[Sequence[Any]]) -> list:
        """Send `commands` in one write and return their replies in order;
        an error reply is returned in its place, like redis-py's
        ``pipeline.execute(raise_on_error=False)``. A broken connection
        raises (redis-py's Connection closes itself first, so the next call
        reconnects)."""
        connection = self.connection
        connection.connect()  # a no-op while connected
        connection.send_packed_command(connection.pack_commands(commands), check_health=False)
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
            yield ScriptChannel(connection)
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
