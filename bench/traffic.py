"""What a measurement costs outside the clock: client round trips, Redis
commands and Redis CPU (INFO commandstats), Redis memory, and this process'
RSS and CPU time."""

from __future__ import annotations

import collections
import contextlib
import os
import time

import redis
import redis.connection


class RoundTrips:
    """Counts client-side round trips of this process: redis-py sends one
    packed buffer per command or per pipeline, so each send_packed_command is
    one round trip. `by_first` counts them by their first command (EVALSHA
    with its script's name when `scripts` maps sha -> name)."""

    def __init__(self, scripts: dict[str, str] | None = None) -> None:
        self.count = 0
        self.by_first: collections.Counter = collections.Counter()
        self.scripts = scripts

    def _label(self, packed) -> str:
        first = packed[0] if isinstance(packed, (list, tuple)) else packed
        parts = bytes(first[:200]).split(b"\r\n")
        name = parts[2].decode("ascii", "replace").lower() if len(parts) > 2 else "?"
        if name == "evalsha" and len(parts) > 4:
            return "evalsha " + self.scripts.get(parts[4].decode("ascii", "replace"), "?")
        return name

    @contextlib.contextmanager
    def counting(self):
        cls = redis.connection.AbstractConnection
        original = cls.send_packed_command

        def send_packed_command(conn, packed, *args, **kwargs):
            self.count += 1
            if self.scripts is not None:
                self.by_first[self._label(packed)] += 1
            return original(conn, packed, *args, **kwargs)

        cls.send_packed_command = send_packed_command
        try:
            yield self
        finally:
            cls.send_packed_command = original


def command_stats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Command -> (calls, usec) since the server started (Redis 7 counts the
    commands a Lua script runs as well as the EVALSHA, whose usec includes them)."""
    return {name.removeprefix("cmdstat_"): (int(stat["calls"]), int(stat["usec"]))
            for name, stat in client.info("commandstats").items()}


def stats_delta(before: dict, after: dict) -> dict[str, tuple[int, int]]:
    """Per command: (calls, usec) between two command_stats, without our INFO."""
    delta = {}
    for name, (calls, usec) in after.items():
        was_calls, was_usec = before.get(name, (0, 0))
        if calls > was_calls and name != "info":
            delta[name] = (calls - was_calls, usec - was_usec)
    return dict(sorted(delta.items()))


def redis_used_memory(client: redis.Redis, settle: float = 10.0) -> int:
    """INFO memory used_memory, once lazily freed objects (UNLINK) are gone."""
    deadline = time.monotonic() + settle
    while True:
        memory = client.info("memory")
        if not memory.get("lazyfree_pending_objects") or time.monotonic() > deadline:
            return int(memory["used_memory"])
        time.sleep(0.05)


def redis_cpu_seconds(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def rss_bytes() -> int:
    """This process' resident set size (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_seconds() -> float:
    """CPU time of this process (user + system)."""
    times = os.times()
    return times.user + times.system
