"""The Lua scripts, one file per atomic operation, and their loader.

A line ``-- @include name`` is replaced by ``include/name.lua`` (shared
helpers such as resource release; they may include others, and each lands
once), so each script Redis runs stays self-contained while no helper is
written twice.
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


def _expand(source: str, seen: set[str]) -> str:
    # An include may include others; each lands once, at its first mention.
    def include(match: re.Match) -> str:
        name = match.group(1)
        if name in seen:
            return ""
        seen.add(name)
        return _expand(_read(f"include/{name}.lua"), seen)
    return _INCLUDE.sub(include, source)


def load(name: str) -> Script:
    source = _expand(_read(f"{name}.lua"), set())
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


NAMES = ("submit", "fetch", "complete", "fail", "heartbeat", "flush_stale",
         "give_back", "retry_failed", "delete_failed", "note", "reclaim_process",
         "give_back_unknown", "cancel", "watch", "failed_select", "wake",
         "save_schedule", "remove_schedule", "fire_schedule",
         # Read-only pages of the dashboard (greenq/browse.py).
         "browse_page", "browse_tally", "browse_locked", "browse_running",
         "browse_processes", "browse_owned")
