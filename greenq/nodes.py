"""Which Redis node serves a key: the one node of a plain Redis (or the
master Sentinel names), or, on a Redis Cluster, the master that owns the
key's slot. Connections are pooled per node, so a process holds a fixed
number of connections on each node whatever its worker count.

The slot map is read with CLUSTER SLOTS from any node that answers, at the
first call and again after a MOVED reply or a broken connection (a master
that died or was failed over): a queue partition is one hash tag, so one
slot, and every script of a partition runs on the node the map names."""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import redis
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, TryAgainError

from . import config
from .channel import ChannelPool, ScriptChannel

log = logging.getLogger(__name__)

SLOTS = 16384
# At most one slot-map read this often: a dead master answers nothing for
# a few seconds until its replica takes over, and every caller asks.
REFRESH_EVERY = 0.2
# A node that does not answer the slot-map read within this long is skipped.
REFRESH_TIMEOUT = 1.0

Address = tuple  # (host, port); None stands for the single node of a plain Redis


def slot_of(key: str | bytes) -> int:
    """The cluster slot of `key` (its hash tag's, when it has one)."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def redirection(reply: Any) -> tuple[str, int, Address] | None:
    """("MOVED" or "ASK", slot, (host, port)) for a redirection error reply,
    None for anything else. redis-py parses both into AskError (MovedError
    a subclass), without the code word."""
    if isinstance(reply, AskError):
        kind = "MOVED" if isinstance(reply, MovedError) else "ASK"
        return kind, reply.slot_id, (reply.host or "127.0.0.1", reply.port)
    if not isinstance(reply, redis.ResponseError):
        return None
    words = str(reply).split()
    if len(words) != 3 or words[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = words[2].rpartition(":")
    return words[0], int(words[1]), (host or "127.0.0.1", int(port))


def try_again(reply: Any) -> bool:
    """A TRYAGAIN reply: a script whose keys a slot migration has split
    between two nodes for the moment; it did not run."""
    return isinstance(reply, TryAgainError) or (
        isinstance(reply, redis.ResponseError) and str(reply).startswith("TRYAGAIN"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Nodes:
    """The nodes of one Redis deployment. `seeds`: the cluster nodes a
    `redis+cluster://` URL named (None: a single node, `connection`'s)."""

    def __init__(self, connection: dict[str, Any],
                 seeds: Sequence[tuple[str, int]] | None = None) -> None:
        self.connection = connection
        self.cluster = seeds is not None
        self._seeds = list(seeds or [])
        self._pools: dict[Address | None, ChannelPool] = {}
        self._clients: dict[Address | None, redis.Redis] = {}
        self._slots: list[Address] = []
        self._known: list[Address] = []  # every node the last slot map named
        self._stale = self.cluster
        self._refreshed_at = float("-inf")

    # -- where -----------------------------------------------------------------

    def address(self, slot: int) -> Address | None:
        """The node serving `slot` (None on a single node)."""
        if not self.cluster:
            return None
        if self._stale or not self._slots:
            self.refresh()
        return self._slots[slot]

    def kwargs(self, address: Address | None) -> dict[str, Any]:
        if address is None:
            return self.connection
        return {**self.connection, "host": address[0], "port": address[1]}

    def lanes(self, address: Address | None) -> ChannelPool:
        """The shared connections to one node (config.SHARED_POOL_SIZE)."""
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = ChannelPool(self.kwargs(address),
                                                      config.SHARED_POOL_SIZE)
        return pool

    def client(self, address: Address | None) -> redis.Redis:
        """A redis-py client on lanes(address)."""
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = redis.Redis(connection_pool=self.lanes(address))
        return client

    def channel(self, address: Address | None) -> ScriptChannel:
        """A connection of its own to one node (a fetcher, a committer)."""
        return self.lanes(address).new_channel()

    def point(self, channel: ScriptChannel, address: Address | None) -> None:
        """Make `channel` talk to `address` (the slot moved since it connected)."""
        connection = channel.connection
        if address is None or (connection.host, connection.port) == tuple(address):
            return
        connection.disconnect()
        connection.host, connection.port = address

    def blocking_client(self, address: Address | None, size: int) -> redis.Redis:
        """A client with its own pool of `size` connections to one node."""
        pool = redis.BlockingConnectionPool(max_connections=size, timeout=config.SOCKET_TIMEOUT,
                                            **self.kwargs(address))
        return redis.Redis(connection_pool=pool)

    # -- the slot map ------------------------------------------------------------

    def stale(self) -> None:
        """The map may be wrong (a broken connection, a MOVED): read it again
        before the next call that needs it."""
        if self.cluster:
            self._stale = True

    def learn(self, slot: int, address: Address) -> None:
        """A MOVED reply named the new owner of `slot`."""
        if self._slots:
            self._slots[slot] = address
        self.stale()

    def refresh(self, wait: bool = False) -> None:
        """Read the slot map from the first node that answers; not again
        within REFRESH_EVERY of the last read, unless `wait`: then once that
        time is over (a caller that must know the map after a failure)."""
        now = time.monotonic()
        if self._slots and now - self._refreshed_at < REFRESH_EVERY:
            if not wait:
                return
            time.sleep(REFRESH_EVERY - (now - self._refreshed_at))
            now = time.monotonic()
        self._refreshed_at = now
        candidates = list(dict.fromkeys([*self._masters(), *self._seeds, *self._known]))
        problems = []
        for host, port in candidates:
            kwargs = {**self.kwargs((host, port)), "socket_timeout": REFRESH_TIMEOUT,
                      "socket_connect_timeout": REFRESH_TIMEOUT}
            connection = kwargs.pop("connection_class", redis.Connection)(**kwargs)
            try:
                connection.send_command("CLUSTER", "SLOTS")
                ranges = connection.read_response()
            except (redis.RedisError, OSError) as exc:
                problems.append(f"{host}:{port}: {exc}")
                continue
            finally:
                connection.disconnect()
            slots: list[Address] = [None] * SLOTS  # type: ignore[list-item]
            known = []
            for start, end, *serving in ranges:
                # The master first, then its replicas: one may be the next master.
                addresses = [(_text(node[0]) or host, int(node[1])) for node in serving]
                known += addresses
                for slot in range(int(start), int(end) + 1):
                    slots[slot] = addresses[0]
            if any(address is None for address in slots):
                problems.append(f"{host}:{port}: not every slot is served")
                continue
            self._slots = slots
            self._known = list(dict.fromkeys(known))
            self._stale = False
            return
        raise redis.ConnectionError("no Redis Cluster node gave a full slot map: "
                                    + "; ".join(problems))

    def _masters(self) -> list[Address]:
        return list(dict.fromkeys(self._slots)) if self._slots else []

    def masters(self) -> list[Address | None]:
        """Every node that serves a slot ([None] on a single node)."""
        if not self.cluster:
            return [None]
        if self._stale or not self._slots:
            self.refresh()
        return self._masters()

    def close(self) -> None:
        for pool in self._pools.values():
            pool.disconnect()
