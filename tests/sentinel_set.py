"""A private Redis Sentinel set for the tests and the recovery bench: one
master, one replica (`--replicaof`) and three sentinels
(`redis-server <conf> --sentinel`, quorum 2), all on free ports, each in its
own temp directory. Never the Redis at 6379."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import redis

from redis_server import RedisServer, free_port

SERVICE = "greenq-test"
DOWN_AFTER_MS = 1000  # a master silent this long is subjectively down
FAILOVER_TIMEOUT_MS = 3000


def _wait(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            pass  # a node restarting or mid-failover: ask again
        if time.monotonic() > deadline:
            raise RuntimeError(f"sentinel set: {what} not reached within {timeout:g} s")
        time.sleep(0.05)


class SentinelNode:
    """One `redis-server <conf> --sentinel` process."""

    def __init__(self, master_port: int, service: str) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="greenq-sentinel-")
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as file:  # Sentinel rewrites it: a file of its own
            file.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"logfile {os.path.join(self.dir, 'log')}\n"
                f"sentinel monitor {service} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {service} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {service} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {service} 1\n")
        self.process = subprocess.Popen(["redis-server", self.conf, "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                                  decode_responses=True)

    def close(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSet:
    """`url` names the set (redis+sentinel://...); `failover()` and
    `kill_master()` move the master and return once the new one takes
    writes; `close()` kills every process and removes the temp dirs."""

    def __init__(self, service: str = SERVICE, timeout: float = 30.0) -> None:
        self.service = service
        self.timeout = timeout
        self.nodes: list[RedisServer] = []
        self.sentinels: list[SentinelNode] = []
        try:
            master = RedisServer().start()
            self.nodes.append(master)
            self.nodes.append(RedisServer(extra_args=(
                "--replicaof", "127.0.0.1", str(master.port))).start())
            self._wait_in_sync(master.port)
            self.sentinels = [SentinelNode(master.port, service) for _ in range(3)]
            self._wait_agreed(master.port)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def url_with_password(self, password: str) -> str:
        return self.url.replace("://", f"://:{password}@", 1)

    # -- who is who -----------------------------------------------------------

    def master_port(self) -> int:
        """The master as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                _host, port = sentinel.client.sentinel_get_master_addr_by_name(self.service)
                return int(port)
            except (redis.ConnectionError, redis.TimeoutError):
                continue
        raise RuntimeError("no sentinel answers")

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def master(self) -> RedisServer:
        return self.node(self.master_port())

    def replica(self) -> RedisServer:
        master = self.master_port()
        return next(n for n in self.nodes if n.port != master)

    def set_min_replicas(self, count: int) -> None:
        """CONFIG SET min-replicas-to-write on the master: with 1, once its
        replica is promoted it refuses writes instead of taking writes the
        failover then drops. On the master only: the promoted node, whose
        one replica is the old master that Sentinel demotes some 10 s later,
        must take writes at once (with two replicas the second follows the
        new master within a second, and the setting can be on every node)."""
        master = self.master_port()
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                with node.client(socket_timeout=2) as client:
                    client.config_set("min-replicas-to-write", count if node.port == master else 0)

    # -- events ---------------------------------------------------------------

    def failover(self) -> float:
        """SENTINEL FAILOVER; returns the time.monotonic() it was sent at,
        once every sentinel names the new master, it takes writes, and the
        old master follows it in sync (so the next failover can start)."""
        sent_at = self.start_failover()
        self.settle()
        return sent_at

    def start_failover(self) -> float:
        """SENTINEL FAILOVER; returns the time.monotonic() it was sent at,
        once every sentinel names the new master and it takes writes. The
        old master is still a master then: Sentinel demotes it some 10 s later."""
        old = self.master_port()
        self._wait_in_sync(old)
        sent_at = 0.0

        def sent() -> bool:  # refused (INPROG) while the previous failover settles
            nonlocal sent_at
            sent_at = time.monotonic()
            return self.sentinels[0].client.execute_command(
                "SENTINEL", "FAILOVER", self.service) in (True, "OK", b"OK")
        _wait("SENTINEL FAILOVER accepted", sent, self.timeout)
        self._wait_new_master(old)
        return sent_at

    def settle(self, hasten: bool = False) -> None:
        """Wait until the other node follows the master in sync and every
        sentinel agrees on both. `hasten`: demote an old master that still
        says it is one (REPLICAOF) instead of waiting some 10 s for Sentinel
        to do it."""
        master = self.master_port()
        if hasten:
            for node in self.nodes:
                if node.port == master or node.process is None or node.process.poll() is not None:
                    continue
                with node.client(socket_timeout=2) as client:
                    if client.execute_command("ROLE")[0] == b"master":
                        client.replicaof("127.0.0.1", master)
        self._wait_in_sync(master)
        self._wait_agreed(master)

    def kill_master(self) -> float:
        """SIGKILL the master; returns the time.monotonic() of the kill, once
        the sentinels have promoted the replica and it takes writes. The
        dead node stays down until revive()."""
        old = self.master_port()
        self._wait_in_sync(old)
        killed_at = time.monotonic()
        self.node(old).kill()
        self._wait_new_master(old)
        self._dead = old
        return killed_at

    def revive(self) -> None:
        """Start the node kill_master() killed again, as a replica of the
        current master, and wait until it is in sync and known to all."""
        dead = self.node(self._dead)
        master = self.master_port()
        dead.extra_args = ("--replicaof", "127.0.0.1", str(master))
        dead.start()
        self._wait_in_sync(master)
        self._wait_agreed(master)

    # -- waits ------------------------------------------------------------------

    def _wait_new_master(self, old: int) -> int:
        def moved() -> bool:
            ports = {int(s.client.sentinel_get_master_addr_by_name(self.service)[1])
                     for s in self.sentinels}
            return len(ports) == 1 and old not in ports
        _wait("a new master named by every sentinel", moved, self.timeout)
        new = self.master_port()
        client = self.node(new).client(socket_timeout=2)
        try:
            _wait("the new master taking writes",
                  lambda: client.set("sentinel-set:probe", "1"), self.timeout)
        finally:
            client.close()
        return new

    def _wait_in_sync(self, master: int) -> None:
        """The other live node replicates `master` with its link up."""
        def in_sync() -> bool:
            for node in self.nodes:
                if node.port == master or node.process is None or node.process.poll() is not None:
                    continue
                with node.client(socket_timeout=2) as client:
                    info = client.info("replication")
                if info.get("master_port") != master or info.get("master_link_status") != "up":
                    return False
            return True
        _wait(f"replicas in sync with :{master}", in_sync, self.timeout)

    def _wait_agreed(self, master: int) -> None:
        """Every sentinel names `master`, knows the other two sentinels, and
        (when a replica runs) knows the replica."""
        replicas = sum(1 for n in self.nodes if n.port != master and n.process is not None
                       and n.process.poll() is None)

        def agreed() -> bool:
            for sentinel in self.sentinels:
                state = sentinel.client.sentinel_master(self.service)
                if int(state["port"]) != master or state["num-other-sentinels"] < 2:
                    return False
                live = [r for r in sentinel.client.sentinel_slaves(self.service)
                        if not r["is_sdown"] and r["master-link-status"] == "ok"]
                if len(live) < replicas:
                    return False
            return True
        _wait("sentinels agreeing", agreed, self.timeout)

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for node in self.nodes:
            node.close()
