"""Redis Sentinel: the `redis+sentinel://` URL, and a connection that goes to
the master the sentinels name, on every connect.

redis-py's own SentinelConnectionPool would do, but greenq opens its
connections three ways (a BlockingConnectionPool subclass for the shared
calls, bare `connection_class(**kwargs)` for the hot loops, and small
pools for pub/sub and the lifeline); a connection class that finds the
master itself works under all three unchanged.

The URL's password is for the data nodes (master and replicas), as in
redis-py's `Sentinel(..., password=...)` and kombu's `sentinel://` URLs;
sentinels are asked without one unless the URL's query gives
`sentinel_password`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, unquote

import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from .channel import OutageReplies

log = logging.getLogger(__name__)

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
# A sentinel must answer within this long, or the next one is asked: a dead
# or unreachable sentinel costs each connect at most this much.
SENTINEL_TIMEOUT = 0.5
# A connection in use asks at most this often whether the master moved. A
# SENTINEL FAILOVER leaves the old master taking writes for some 10 s
# before Sentinel demotes it (measured with Redis 7.0); writes sent there
# meanwhile are lost when it resyncs, so waiting for its READONLY is not enough.
RECHECK_INTERVAL = 1.0


class MasterLocator:
    """Where the master of one Sentinel service is, as the sentinels say.
    Shared by every connection of a queue; safe in threads and greenlets."""

    def __init__(self, sentinels: list[tuple[str, int]], service: str,
                 sentinel_password: str | None = None) -> None:
        self.sentinels = list(sentinels)
        self.service = service
        self._sentinel_password = sentinel_password
        self._manager: redis.sentinel.Sentinel | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self.address: tuple[str, int] | None = None  # the master last named
        self._checked_at = 0.0  # time.monotonic() of the last answer

    def __repr__(self) -> str:
        return f"<MasterLocator {self.describe()}>"

    def describe(self) -> str:
        hosts = ",".join(_host_port(host, port) for host, port in self.sentinels)
        return f"sentinel {hosts}/{self.service}"

    def _sentinel(self) -> redis.sentinel.Sentinel:
        if self._manager is None or self._pid != os.getpid():  # a forked child starts afresh
            self._manager = redis.sentinel.Sentinel(self.sentinels, sentinel_kwargs={
                "socket_timeout": SENTINEL_TIMEOUT,
                "socket_connect_timeout": SENTINEL_TIMEOUT,
                "password": self._sentinel_password,
                "retry": Retry(NoBackoff(), 0),
            })
            self._pid = os.getpid()
        return self._manager

    def discover(self) -> tuple[str, int]:
        """The master's address; raises redis.sentinel.MasterNotFoundError (a
        redis.ConnectionError) when no sentinel names one in good state."""
        with self._lock:
            return self._ask()

    def _ask(self) -> tuple[str, int]:
        address = self._sentinel().discover_master(self.service)
        address = (str(address[0]), int(address[1]))
        if self.address is not None and address != self.address:
            log.warning("Sentinel %s: the master moved from %s to %s", self.service,
                        _host_port(*self.address), _host_port(*address))
        self.address, self._checked_at = address, time.monotonic()
        return address

    def moved_from(self, address: tuple[str, int]) -> bool:
        """Whether the master is no longer at `address`, asking the sentinels
        when the last answer is older than RECHECK_INTERVAL (one caller asks,
        the others go on with the last answer). Sentinels that cannot answer
        say nothing moved: a working master connection is kept."""
        if time.monotonic() - self._checked_at >= RECHECK_INTERVAL \
                and self._lock.acquire(blocking=False):
            try:
                self._ask()
            except redis.RedisError as exc:
                log.debug("Sentinel %s: recheck failed: %r", self.service, exc)
                self._checked_at = time.monotonic()  # not before the next interval
            finally:
                self._lock.release()
        return self.address is not None and self.address != address


class SentinelConnection(OutageReplies, redis.Connection):
    """A TCP connection to the master that `master_locator` finds at each
    connect. Once connected it checks that the node says it is the master
    (ROLE): Sentinel may still name a master that was just demoted. While
    connected it gives up a master Sentinel no longer names (see
    RECHECK_INTERVAL), and, unlike a plain connection, takes NOREPLICAS for
    an outage: a master cut off from its replicas refuses writes under
    `min-replicas-to-write` until Sentinel names a new one."""

    outage_codes = OutageReplies.outage_codes + ("NOREPLICAS",)

    def __init__(self, *, master_locator: MasterLocator, **kwargs: Any) -> None:
        kwargs.setdefault("host", "")
        super().__init__(**kwargs)
        self.master_locator = master_locator
        self.redis_connect_func = _handshake_at_master

    def repr_pieces(self) -> list[tuple[str, Any]]:
        return [("service", self.master_locator.service), ("host", self.host),
                ("port", self.port), ("db", self.db)]

    def connect(self) -> None:
        if self._sock is not None and self.master_locator.moved_from((self.host, self.port)):
            self.disconnect()
        super().connect()

    def _connect(self):
        self.host, self.port = self.master_locator.discover()
        return super()._connect()


def _handshake_at_master(connection: SentinelConnection) -> None:
    """redis-py's handshake (AUTH, SELECT, ...), then the role check."""
    connection.on_connect()
    connection.send_command("ROLE")
    try:
        role = connection.read_response()[0]
    except redis.ResponseError as exc:  # ROLE refused to this ACL user; READONLY still guards
        log.debug("ROLE refused at %s: %s", connection._host_error(), exc)
        return
    role = role.decode() if isinstance(role, bytes) else str(role)
    if role != "master":
        raise redis.ConnectionError(
            f"{connection._host_error()} is a {role}, not the master of "
            f"{connection.master_locator.service} (Sentinel has not caught up with a failover)")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_host(text: str, url: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad sentinel address {text!r} in {redact(url)}")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"empty sentinel host in {redact(url)}")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad sentinel port {port_text!r} in {redact(url)}")
    return host, int(port_text)


def redact(url: str) -> str:
    """`url` with its password (and any sentinel_password) replaced by ***."""
    head, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        user, _, _password = netloc.rpartition("@")[0].partition(":")
        netloc = f"{user}:***@{netloc.rpartition('@')[2]}"
    path, qmark, query = path.partition("?")
    if query:
        query = "&".join("sentinel_password=***" if part.startswith("sentinel_password=") else part
                         for part in query.split("&"))
    return f"{head}{sep}{netloc}{slash}{path}{qmark}{query}"


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(SCHEME + "://")


def parse_url(url: str) -> dict[str, Any]:
    """Connection kwargs for a
    `redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]`
    URL (optional query: `sentinel_password=...`). Raises ValueError, without
    the password in its text, for a URL that names no service, no sentinel,
    or a bad port or db."""
    rest = url[len(SCHEME) + 3:]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    if not netloc.strip():
        raise ValueError(f"no sentinel address in {redact(url)}: "
                         f"expected {SCHEME}://host:port[,host:port...]/service_name[/db]")
    sentinels = [_parse_host(part.strip(), url) for part in netloc.split(",")]
    parts = path.strip("/").split("/") if path.strip("/") else []
    if not parts:
        raise ValueError(f"no service name in {redact(url)}: "
                         f"expected {SCHEME}://host:port[,host:port...]/service_name[/db]")
    if len(parts) > 2:
        raise ValueError(f"too many path parts in {redact(url)}: expected /service_name[/db]")
    service = unquote(parts[0])
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ValueError(f"bad db {parts[1]!r} in {redact(url)}: a number >= 0")
        db = int(parts[1])
    sentinel_password = None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != "sentinel_password":
            raise ValueError(f"unknown option {name!r} in {redact(url)} "
                             f"(a {SCHEME} URL takes only sentinel_password)")
        sentinel_password = value
    kwargs: dict[str, Any] = {
        "connection_class": SentinelConnection,
        "master_locator": MasterLocator(sentinels, service, sentinel_password),
        "db": db,
    }
    if username:
        kwargs["username"] = username
    if password is not None:
        kwargs["password"] = password
    return kwargs
