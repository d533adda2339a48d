"""The master <-> child channel: msgpack frames over a socketpair.

Child -> master: ("process", process id) (its GreenQueue's, which Redis
files its jobs under; sent before it fetches any), ("ready", pid),
("event", name, payload), ("failed", reason) (it could not start).
Master -> child: ("subscribe", [event names]), ("children", how many there are now).
A closed channel means the other side is gone.

A task may put anything into its params (they are its own dict), and an
event carries them to the master. What msgpack cannot carry is sent as its
repr, so the event still arrives.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Iterator

import gevent.lock
import msgpack

from . import errors
from .job import Job

log = logging.getLogger(__name__)

JOB_EVENTS = ("job_success", "job_fail", "job_retry", "job_cancel")
_INT_RANGE = (-(2**63), 2**64 - 1)  # what msgpack packs as an integer
_MAX_DEPTH = 100  # deeper than this, a value is sent as its repr (msgpack's limit is 512)


class Link:
    """One end of the master <-> child channel: sends and receives whole
    messages (tuples of msgpack-able values) over a stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = gevent.lock.Semaphore()
        self._packer = msgpack.Packer(use_bin_type=True)
        self._warned = False

    def send(self, *message: Any) -> bool:
        """Send one message; False when the other side is gone."""
        try:
            data = self._packer.pack(message)
        except (TypeError, ValueError, OverflowError) as exc:  # UnicodeEncodeError is a ValueError
            # The common case pays nothing: only a message that failed is walked.
            data = self._packer.pack(carriable(message))
            (log.debug if self._warned else log.warning)(
                "a %r message held values msgpack cannot carry (%s); sent their repr instead",
                message[0], exc)
            self._warned = True
        with self._send_lock:
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

    def receive(self) -> Iterator[list]:
        """Messages until the other side closes the channel."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, object_pairs_hook=_mapping)
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            unpacker.feed(data)
            yield from unpacker

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def carriable(value: Any, depth: int = 0) -> Any:
    """`value` with whatever msgpack cannot pack replaced by its repr."""
    if value is None or isinstance(value, (bool, float, bytes)):
        return value
    if isinstance(value, int):
        return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else _repr(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _repr(value)
        return value
    if depth < _MAX_DEPTH:
        if isinstance(value, (list, tuple)):
            return [carriable(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {_carriable_key(key, depth + 1): carriable(item, depth + 1)
                    for key, item in value.items()}
    return _repr(value)


def _carriable_key(key: Any, depth: int) -> Any:
    # A tuple key stays a tuple here (a list cannot be a key); _mapping
    # rebuilds it on the other side.
    if isinstance(key, tuple) and depth < _MAX_DEPTH:
        return tuple(_carriable_key(item, depth + 1) for item in key)
    return carriable(key, depth)


def _repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - any object's __repr__ may fail
        return f"<{type(value).__name__} object; its repr raised {type(exc).__name__}>"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _mapping(pairs: list) -> dict:
    """A map as a dict. msgpack sends a tuple key as an array, which Python
    cannot use as a key: it becomes a tuple again."""
    try:
        return dict(pairs)
    except TypeError:
        return {_hashable(key): value for key, value in pairs}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(item) for item in key) if isinstance(key, list) else key


def encode_payload(event: str, payload: Any) -> Any:
    if event in JOB_EVENTS:
        # state last: the master's handlers see it too ("scheduled" for a
        # retry waiting out a back-off); older children send 8 values.
        return [payload.id, payload.task_id, payload.resource_id, payload.params,
                payload.retries, payload.attempts, payload.error, payload.duration,
                payload.state]
    if isinstance(payload, BaseException):
        try:
            text = str(payload)
        except Exception:  # noqa: BLE001 - an exception's __str__ may fail too
            text = _repr(payload)
        return [type(payload).__name__, text]
    return payload


def decode_payload(event: str, payload: Any) -> Any:
    if event in JOB_EVENTS:
        return Job(*payload[:7], duration=payload[7] if len(payload) > 7 else None,
                   state=payload[8] if len(payload) > 8 else None)
    if event == "error":
        name, message = payload
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, errors.GreenQError):
            return kind(message)
        return errors.GreenQError(f"{name}: {message}")
    return payload
