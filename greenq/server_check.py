"""What greenq checks about the Redis server at start, and after an outage:
settings that lose jobs, releases with known Lua flaws, restarts."""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

# CVE-2025-49844 (a Lua use-after-free: remote code execution by any client
# allowed to run scripts) and its siblings CVE-2025-46817/46818/46819 were
# fixed in these releases; greenq runs Lua, so every greenq user may.
LUA_FIXED_IN = {(6, 2): (6, 2, 20), (7, 2): (7, 2, 11), (7, 4): (7, 4, 6),
                (8, 0): (8, 0, 4), (8, 2): (8, 2, 2)}
FIX_LIST = "6.2.20, 7.2.11, 7.4.6, 8.0.4, 8.2.2 or later"


def lua_flaw_warning(info: dict) -> str | None:
    """A warning when INFO server describes a Redis release with the Lua
    remote-code-execution flaw, else None."""
    if "valkey_version" in info:  # Valkey reports a Redis-compatible version; judge it apart
        return None
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", str(info.get("redis_version", "")))
    if not match:
        return None
    version = tuple(int(part) for part in match.groups())
    fixed = LUA_FIXED_IN.get(version[:2])
    if fixed is not None and version >= fixed:
        return None
    if version >= (8, 2, 2):
        return None  # a release line newer than the advisory: it has the fix
    return (f"Redis {'.'.join(map(str, version))} has CVE-2025-49844, a Lua flaw that lets any "
            f"client allowed to run scripts execute code on the Redis host; upgrade to "
            f"{FIX_LIST}, and let only trusted clients reach Redis. Debian's and other "
            f"distributions' builds may carry the fix under the old version number: see your "
            f"package's changelog")


def eviction_warning(policy: str | None) -> str | None:
    if policy in (None, "noeviction"):
        return None
    return (f"Redis maxmemory-policy is {policy}: Redis may evict job records and lose jobs; "
            f"use noeviction")
