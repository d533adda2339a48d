"""The master <-> child channel: msgpack frames over a socketpair.

Child -> master: ("ready", pid), ("event", name, payload), ("failed", reason)
(it could not start).
Master -> child: ("subscribe", [event names]).
A closed channel means the other side is gone.
"""

from __future__ import annotations

import socket
from typing import Any, Iterator

import gevent.lock
import msgpack

from . import errors
from .job import Job

JOB_EVENTS = ("job_success", "job_fail", "job_retry")


class Link:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = gevent.lock.Semaphore()
        self._packer = msgpack.Packer(use_bin_type=True)

    def send(self, *message: Any) -> bool:
        data = self._packer.pack(message)
        with self._send_lock:
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

    def receive(self) -> Iterator[list]:
        """Messages until the other side closes the channel."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
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


def encode_payload(event: str, payload: Any) -> Any:
    if event in JOB_EVENTS:
        return [payload.id, payload.task_id, payload.resource_id, payload.params,
                payload.retries, payload.attempts, payload.error]
    if isinstance(payload, BaseException):
        return [type(payload).__name__, str(payload)]
    return payload


def decode_payload(event: str, payload: Any) -> Any:
    if event in JOB_EVENTS:
        return Job(*payload)
    if event == "error":
        name, message = payload
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, errors.GreenQError):
            return kind(message)
        return errors.GreenQError(f"{name}: {message}")
    return payload
