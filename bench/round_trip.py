"""What one Redis round trip costs this machine, with and without gevent's
monkey patching: a raw socket PING (its reply waited for, then polled for
as greenq's shared channels do, greenq/channel.py), a PING written and read on one
redis-py Connection (as greenq's script channels do), redis-py's client
PING (pool checkout, retries, callbacks) and EVALSHA of a script that
returns at once, 5,000 calls each, against a throwaway redis-server. A
single submit is one round trip, so this is its floor.

    python -m bench.round_trip

Each mode runs in its own interpreter (patching is for the whole process).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

CALLS = 5000


def per_second(call) -> int:
    call()
    began = time.perf_counter()
    for _ in range(CALLS):
        call()
    return round(CALLS / (time.perf_counter() - began))


def measure() -> dict:
    import redis

    from bench.redis_server import ThrowawayRedis

    with ThrowawayRedis() as server:
        raw = socket.create_connection(("127.0.0.1", server.port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray(64)

        def raw_ping() -> None:
            raw.sendall(b"*1\r\n$4\r\nPING\r\n")
            raw.recv_into(buffer)

        os_socket = getattr(raw, "_sock", raw)  # the OS socket under gevent's

        def polled_ping() -> None:
            raw.sendall(b"*1\r\n$4\r\nPING\r\n")
            while True:
                try:
                    if os_socket.recv_into(buffer, 64, socket.MSG_DONTWAIT):
                        return
                except BlockingIOError:
                    os.sched_yield()

        client = redis.Redis.from_url(server.url)
        sha = client.script_load("return 1")
        connection = client.connection_pool.get_connection()

        def connection_ping() -> None:
            connection.send_packed_command(connection.pack_commands([("PING",)]),
                                           check_health=False)
            connection.read_response()

        figures = {"raw socket PING": per_second(raw_ping),
                   "raw socket PING, polled": per_second(polled_ping),
                   "Connection PING": per_second(connection_ping),
                   "redis-py PING": per_second(client.ping),
                   "redis-py EVALSHA": per_second(lambda: client.evalsha(sha, 0))}
        raw.close()
        return figures


def main() -> None:
    if os.environ.get("BENCH_ROUND_TRIP_MODE"):
        if os.environ["BENCH_ROUND_TRIP_MODE"] == "gevent":
            from gevent import monkey

            monkey.patch_all()
        print(json.dumps(measure()))
        return
    for mode in ("plain", "gevent"):
        out = subprocess.run([sys.executable, "-m", "bench.round_trip"], check=True, text=True,
                             capture_output=True,
                             env={**os.environ, "BENCH_ROUND_TRIP_MODE": mode}).stdout
        print(f"{mode:7s}", ", ".join(f"{name} {rate:,}/s" for name, rate in json.loads(out).items()))


if __name__ == "__main__":
    main()
