"""Params encoding: msgpack (default, also carries bytes) or JSON.

Both accept exactly the shapes a JSON round trip keeps (plus bytes for
msgpack), so a job means the same whichever serializer wrote it. Each
encoded blob is stored beside a one-letter encoding tag, so a worker reads
jobs written by either and the setting can change on a live queue.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

import msgpack

from .errors import JobDecodeError, ParamsError

MSGPACK = "m"
JSON = "j"
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
_MAX_DEPTH = 100


class _Refused(Exception):
    """Carries why a value was refused and, once unwound, where it sits."""

    def __init__(self, why: str) -> None:
        self.why = why
        self.path: list[str] = []


def check_params(value: Any, allow_bytes: bool, where: str = "params") -> None:
    """Raise ParamsError unless `value` survives a round trip unchanged in shape."""
    try:
        _check(value, allow_bytes, 0)
    except _Refused as refused:
        raise ParamsError(where + "".join(reversed(refused.path)) + ": " + refused.why) from None


def _check(value: Any, allow_bytes: bool, depth: int) -> None:
    # The happy path formats nothing: the location of a refused value is
    # built only while the refusal unwinds.
    kind = type(value)
    if kind is str:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _Refused(f"string is not valid Unicode ({exc.reason})") from None
    elif value is None or kind is bool:
        return
    elif kind is int:
        if not _INT64_MIN <= value <= _UINT64_MAX:
            raise _Refused(f"integer {value} does not fit in 64 bits")
    elif kind is float:
        if not math.isfinite(value):
            raise _Refused(f"{value} is not a finite number")
    elif kind is dict:
        if depth >= _MAX_DEPTH:
            raise _Refused(f"nested deeper than {_MAX_DEPTH} levels")
        for key, item in value.items():
            if type(key) is not str:
                raise _Refused(f"key {key!r} is {_a(type(key).__name__)}; keys must be str")
            try:
                _check(key, allow_bytes, depth + 1)
            except _Refused as refused:
                refused.path.append(f" key {key!r}")
                raise
            try:
                _check(item, allow_bytes, depth + 1)
            except _Refused as refused:
                refused.path.append(f"[{key!r}]")
                raise
    elif kind is list or kind is tuple:
        if depth >= _MAX_DEPTH:
            raise _Refused(f"nested deeper than {_MAX_DEPTH} levels")
        for index, item in enumerate(value):
            try:
                _check(item, allow_bytes, depth + 1)
            except _Refused as refused:
                refused.path.append(f"[{index}]")
                raise
    elif kind is bytes and allow_bytes:
        return
    else:
        carried = "None, bool, int, float, str, list, tuple, dict"
        if allow_bytes:
            carried += ", bytes"
        raise _Refused(f"{_a(kind.__name__)} cannot be carried (only {carried})")


def _a(name: str) -> str:
    """A type's name with its article: "an int", "a set", "a UUID"."""
    return ("an " if name[:1].lower() in "aeio" else "a ") + name


def _refuse_ext(code: int, data: bytes) -> Any:
    raise JobDecodeError(f"msgpack ext type {code} is not allowed in params")


class Serializer:
    """One encoding: `encode` checks and encodes, `tag` names it in the record."""

    def __init__(self, tag: str, allow_bytes: bool, dump: Callable[[Any], bytes]) -> None:
        self.tag = tag
        self.allow_bytes = allow_bytes
        self._dump = dump

    def encode(self, params: Any, max_bytes: int, what: str = "params") -> bytes:
        """`what`: how errors name the value ("params", or a task's "result")."""
        check_params(params, self.allow_bytes, what)
        blob = self._dump(params)
        if len(blob) > max_bytes:
            raise ParamsError(f"{what} encode to {len(blob)} bytes, over the {max_bytes}-byte cap")
        return blob


def _dump_json(params: Any) -> bytes:
    return json.dumps(params, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()


SERIALIZERS = {
    "msgpack": Serializer(MSGPACK, True, msgpack.Packer(use_bin_type=True).pack),
    "json": Serializer(JSON, False, _dump_json),
}


def get_serializer(name: str) -> Serializer:
    try:
        return SERIALIZERS[name]
    except KeyError:
        raise ValueError(f"serializer must be 'msgpack' or 'json', not {name!r}") from None


def decode_params(tag: bytes | str | None, blob: bytes | None, max_bytes: int,
                  what: str = "params") -> Any:
    """Decode a stored params (or result: `what`) blob written by either serializer."""
    if blob is None:
        raise JobDecodeError(f"record has no {what}")
    if len(blob) > max_bytes:
        raise JobDecodeError(f"{what} are {len(blob)} bytes, over the {max_bytes}-byte cap")
    if isinstance(tag, bytes):
        tag = tag.decode("ascii", "replace")
    try:
        if tag == MSGPACK:
            value = msgpack.unpackb(blob, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
        elif tag == JSON:
            value = json.loads(blob)
        else:
            raise JobDecodeError(f"unknown {what} encoding {tag!r}")
    except JobDecodeError:
        raise
    except Exception as exc:  # msgpack and json raise a zoo of types on bad input
        raise JobDecodeError(f"{what} cannot be decoded as {tag!r}: {exc!r}") from None
    # A record written by someone else may hold what submit refuses (msgpack
    # timestamps skip ext_hook; json.loads takes NaN): tasks see JSON shapes only.
    try:
        check_params(value, allow_bytes=tag == MSGPACK, where=what)
    except ParamsError as exc:
        raise JobDecodeError(f"{what} decoded as {tag!r} hold {exc}") from None
    return value
