"""The Lua scripts, one file per atomic operation, and their loader.

A line ``-- @include name`` is replaced by ``include/name.lua`` (shared
helpers such as resource release), so each script Redis runs stays
self-contained while no helper is written twice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

_INCLUDE = re.compile(r"^-- @include (\w+)$", re.MULTILINE)


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


def _read(relative: str) -> str:
    return resources.files(__package__).joinpath(relative).read_text(encoding="utf-8")


def load(name: str) -> Script:
    source = _INCLUDE.sub(lambda m: _read(f"include/{m.group(1)}.lua"), _read(f"{name}.lua"))
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


NAMES = ("submit", "fetch", "complete", "fail", "heartbeat", "flush_stale",
         "give_back", "retry_failed", "delete_failed", "note", "reclaim_process",
         "give_back_unknown", "watch")
