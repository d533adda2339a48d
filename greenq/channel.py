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
from typing import Any, Iterator, Sequence

import gevent.queue
import redis
from redis.exceptions import ResponseError

from . import config


class ScriptChannel:
    """One connection, used by one greenlet at a time."""

    def __init__(self, connection: redis.connection.AbstractConnection) -> None:
        self.connection = connection
        # Sent and answered at least once: a failure may then be a connection
        # the server closed while it sat idle (see ChannelPool.execute).
        self.used = False

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
        self.used = True
        return replies

    def disconnect(self) -> None:
        self.connection.disconnect()
        self.used = False


class ChannelPool:
    """Up to `size` channels shared by the greenlets of one process; a caller
    waits for a free one (bounded connections) for at most the socket
    timeout."""

    def __init__(self, connection_kwargs: dict[str, Any], size: int) -> None:
        self._factory = redis.ConnectionPool(max_connections=size, **connection_kwargs)
        self._idle: gevent.queue.LifoQueue = gevent.queue.LifoQueue()
        self._all: list[ScriptChannel] = []
        self._size = size

    def new_channel(self) -> ScriptChannel:
        """A channel of its own, outside the shared ones (a fetcher, a committer)."""
        kwargs = dict(self._factory.connection_kwargs)
        return ScriptChannel(self._factory.connection_class(**kwargs))

    @contextlib.contextmanager
    def borrow(self) -> Iterator[ScriptChannel]:
        if self._idle.empty() and len(self._all) < self._size:
            self._all.append(self.new_channel())
            self._idle.put(self._all[-1])
        try:
            channel = self._idle.get(timeout=config.SOCKET_TIMEOUT)
        except gevent.queue.Empty:
            raise redis.ConnectionError(
                f"no free Redis connection within {config.SOCKET_TIMEOUT:g} s "
                f"({self._size} in use)") from None
        try:
            yield channel
        finally:
            self._idle.put(channel)

    def execute(self, commands: Sequence[Sequence[Any]], resend_safe: bool) -> list:
        """Run `commands` on a shared channel. `resend_safe` (the commands
        change nothing twice, e.g. a submit keyed by its job ids): a broken
        connection that had served earlier calls is tried once more on a new
        one, since Redis closes idle connections (its `timeout` setting, a
        restart) and only a write shows it."""
        with self.borrow() as channel:
            was_used = channel.used
            try:
                return channel.execute(commands)
            except redis.ConnectionError:
                channel.disconnect()
                if not (resend_safe and was_used):
                    raise
            return channel.execute(commands)

    def disconnect(self) -> None:
        for channel in self._all:
            channel.disconnect()
