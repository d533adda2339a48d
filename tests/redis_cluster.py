"""A real local Redis Cluster for the tests and the bench, and the cluster
events they need, provoked on demand: a slot migration (whole, or held
half-way so clients meet ASK and TRYAGAIN), a manual failover, a killed
master and its return as a replica.

Every node is a `redis-server --cluster-enabled yes` process of its own
(tests/redis_server.py), on 127.0.0.1. After every event the cluster is
waited for until all live nodes say `cluster_state:ok`, agree on who owns
which slot and who replicates whom, and every replica's link is up; so a
caller never starts on a half-settled cluster."""

from __future__ import annotations

import logging
import random
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable

import redis
from redis.cluster import ClusterNode, RedisCluster

from cluster_topology import Address, NodeView, is_clean, node_on, parse_cluster_nodes, summary
from redis_server import RedisServer

logger = logging.getLogger(__name__)

BUS_PORT_OFFSET = 10000  # Redis Cluster's bus listens on port + 10000
SETTLE_TIMEOUT = 30.0  # seconds; generous, so a broken cluster fails instead of hanging
MIGRATE_TIMEOUT_MS = 5000


@dataclass
class Migration:
    """A slot between two masters: MIGRATING on the source, IMPORTING on the target."""

    slot: int
    source_port: int
    target_port: int
    source_id: str
    target_id: str
    moved_keys: list[bytes] = field(default_factory=list)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too. Drawn below the
    kernel's ephemeral range, so that no outgoing connection (the nodes' own bus
    links included) can take a node's port between the check and its start, or
    while a killed node is down before its restart."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as file:
        ephemeral_low = int(file.read().split()[0])
    high = min(ephemeral_low, 65536) - BUS_PORT_OFFSET
    for _ in range(200):
        port = random.randrange(10000, high)
        if _port_is_free(port) and _port_is_free(port + BUS_PORT_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalCluster:
    """`masters` masters with `replicas_per_master` replicas each, started by
    `start()` (or `with LocalCluster() as cluster:`), removed by `close()`.

    `node_timeout_ms` is Redis' cluster-node-timeout: a killed master is
    replaced about 1-2 node timeouts after its death."""

    def __init__(self, masters: int = 3, replicas_per_master: int = 1,
                 node_timeout_ms: int = 1000) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.master_count = masters
        self.replicas_per_master = replicas_per_master
        self.node_timeout_ms = node_timeout_ms
        self.servers: dict[int, RedisServer] = {}  # port -> node; a node keeps its port for life
        self.open_migrations: list[Migration] = []
        self.startup_seconds: float | None = None
        self._admin_clients: dict[int, redis.Redis] = {}

    # -- life cycle ---------------------------------------------------------

    def start(self) -> "LocalCluster":
        started = time.monotonic()
        try:
            for _ in range(self.master_count * (1 + self.replicas_per_master)):
                self._start_new_node()
            self._create()
            self.wait_until_settled()
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info("cluster of %d nodes up in %.2fs: %s", len(self.servers),
                    self.startup_seconds, self.url)
        return self

    def _start_new_node(self) -> None:
        for attempt in range(5):  # another process may take the port before redis binds it
            port = cluster_port()
            server = RedisServer(port=port, extra_args=self._node_args())
            try:
                server.start()
            except RuntimeError:
                server.close()
                if attempt == 4:
                    raise
                continue
            self.servers[port] = server
            return

    def _node_args(self) -> tuple[str, ...]:
        return ("--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",  # in the node's own --dir
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # a replica syncs at once, not after the default 5 s wait for company
                "--repl-diskless-sync-delay", "0")

    def _create(self) -> None:
        addresses = [f"127.0.0.1:{port}" for port in self.servers]
        done = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses,
             "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")

    def close(self) -> None:
        for client in self._admin_clients.values():
            client.close()
        self._admin_clients.clear()
        for server in self.servers.values():
            server.close()
        self.servers.clear()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the topology, as the cluster sees it now ----------------------------

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in self.masters())

    def view(self) -> list[NodeView]:
        """CLUSTER NODES as the first live node sees it."""
        for port in self.live_ports():
            try:
                return parse_cluster_nodes(self._admin(port).execute_command("CLUSTER", "NODES"))
            except (redis.ConnectionError, redis.TimeoutError):
                continue
        raise RuntimeError("no live cluster node")

    def masters(self) -> list[Address]:
        return sorted(node.address for node in self.view() if node.is_master and not node.failed)

    def replicas(self) -> list[Address]:
        return sorted(node.address for node in self.view()
                      if not node.is_master and not node.failed)

    def replicas_of(self, master_port: int) -> list[Address]:
        nodes = self.view()
        master_id = self._id_of(master_port, nodes)
        return sorted(node.address for node in nodes
                      if node.master_id == master_id and not node.failed)

    def node_for_slot(self, slot: int) -> Address:
        for node in self.view():
            if slot in node.slots and not node.failed:
                return node.address
        raise LookupError(f"no live node owns slot {slot}")

    def key_slot(self, key: str | bytes) -> int:
        return int(self._admin(self.live_ports()[0]).execute_command("CLUSTER", "KEYSLOT", key))

    def node_for_key(self, key: str | bytes) -> Address:
        return self.node_for_slot(self.key_slot(key))

    def client(self, port: int, **kwargs) -> redis.Redis:
        """A plain client to one node: it sees MOVED and ASK as errors."""
        return self.servers[port].client(**kwargs)

    def cluster_client(self, **kwargs) -> RedisCluster:
        """redis-py's cluster client, which follows MOVED and ASK itself."""
        nodes = [ClusterNode(host, port) for host, port in self.masters()]
        return RedisCluster(startup_nodes=nodes, **kwargs)

    def live_ports(self) -> list[int]:
        return sorted(port for port, server in self.servers.items()
                      if server.process is not None and server.process.poll() is None)

    def _admin(self, port: int) -> redis.Redis:
        if port not in self._admin_clients:
            self._admin_clients[port] = self.client(port, decode_responses=True, socket_timeout=2)
        return self._admin_clients[port]

    def _id_of(self, port: int, nodes: list[NodeView] | None = None) -> str:
        return node_on(nodes if nodes is not None else self.view(), port).id

    # -- waiting for the cluster to settle ------------------------------------

    def wait_until_settled(self, timeout: float = SETTLE_TIMEOUT,
                           condition: Callable[[list[NodeView]], bool] | None = None) -> None:
        """Until every live node has cluster_state:ok, all hold the same map of
        slots, roles and failed nodes, every replica's link to its master is up
        and `condition` (given the agreed view) holds."""
        deadline = time.monotonic() + timeout
        while True:
            agreed = self._agreed_view()
            if agreed is not None and (condition is None or condition(agreed)):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not settled within {timeout}s:\n{self._describe()}")
            time.sleep(0.02)

    def _agreed_view(self) -> list[NodeView] | None:
        live = self.live_ports()
        summaries: set[Hashable] = set()
        nodes: list[NodeView] = []
        try:
            for port in live:
                admin = self._admin(port)
                if "cluster_state:ok" not in admin.execute_command("CLUSTER", "INFO"):
                    return None
                nodes = parse_cluster_nodes(admin.execute_command("CLUSTER", "NODES"))
                if not is_clean(nodes, self.servers, live):
                    return None
                summaries.add(summary(nodes))
                if not self._replica_link_up(port, nodes):
                    return None
        except redis.RedisError:  # a node just killed or restarting
            return None
        return nodes if len(summaries) == 1 else None

    def _describe(self) -> str:
        """Each live node's state and CLUSTER NODES, for a timeout's message."""
        lines = []
        for port in self.live_ports():
            try:
                admin = self._admin(port)
                state = admin.execute_command("CLUSTER", "INFO").split()[0]
                lines += [f"-- node {port}: {state}", admin.execute_command("CLUSTER", "NODES")]
            except redis.RedisError as error:
                lines.append(f"-- node {port}: {error!r}")
        return "\n".join(lines)

    def _replica_link_up(self, port: int, nodes: list[NodeView]) -> bool:
        me = node_on(nodes, port)
        if me.is_master:
            return True
        info = self._admin(port).info("replication")
        master = next(node for node in nodes if node.id == me.master_id)
        return info.get("master_link_status") == "up" and info.get("master_port") == master.port

    # -- slot migration ---------------------------------------------------------

    def begin_migration(self, slot: int, target_port: int, keys_to_move: int | None = None,
                        keys_batch: int = 100) -> Migration:
        """Open the migration of `slot` to the master on `target_port` and move
        `keys_to_move` of its keys (None: half of them), then stop: the slot
        stays MIGRATING on its owner and IMPORTING on the target, so a client
        gets ASK for a key already moved and TRYAGAIN for a multi-key command
        across both sides. `finish_migration` completes it."""
        nodes = self.view()
        source_port = self.node_for_slot(slot)[1]
        if source_port == target_port:
            raise ValueError(f"slot {slot} is already on port {target_port}")
        migration = Migration(slot, source_port, target_port,
                              self._id_of(source_port, nodes), self._id_of(target_port, nodes))
        # The order redis-cli uses: IMPORTING first, so no ASK points to a node not ready for it.
        self._admin(target_port).execute_command(
            "CLUSTER", "SETSLOT", slot, "IMPORTING", migration.source_id)
        self._admin(source_port).execute_command(
            "CLUSTER", "SETSLOT", slot, "MIGRATING", migration.target_id)
        self.open_migrations.append(migration)
        if keys_to_move is None:
            keys_to_move = (self._admin(source_port).execute_command(
                "CLUSTER", "COUNTKEYSINSLOT", slot) + 1) // 2
        self._move_keys(migration, keys_to_move, keys_batch)
        return migration

    def finish_migration(self, migration: Migration, keys_batch: int = 100) -> None:
        """Move the keys left on the source, then give the slot to the target:
        SETSLOT NODE on the target, the source, then every other master."""
        self._move_keys(migration, None, keys_batch)
        owners = [migration.target_port, migration.source_port]
        owners += [port for _, port in self.masters() if port not in owners]
        self.open_migrations.remove(migration)

        def moved(nodes: list[NodeView]) -> bool:
            return any(node.id == migration.target_id and migration.slot in node.slots
                       for node in nodes)

        # A gossip message the source sent before its SETSLOT, carrying a
        # higher config epoch than the target's, can hand the slot back to
        # the source in the target's view while the source has let it go:
        # then nobody serves it. Until every node agrees: the target's epoch
        # bumped, and SETSLOT NODE again on every master.
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            for port in owners:
                self._admin(port).execute_command(
                    "CLUSTER", "SETSLOT", migration.slot, "NODE", migration.target_id)
            try:
                self.wait_until_settled(timeout=min(3.0, max(0.1, deadline - time.monotonic())),
                                        condition=moved)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
            # Before the next round, make the target's claim the newest.
            self._admin(migration.target_port).execute_command("CLUSTER", "BUMPEPOCH")

    def migrate_slot(self, slot: int, target_port: int, keys_batch: int = 100) -> None:
        """The whole resharding of one slot, as `redis-cli --cluster reshard` does it."""
        self.finish_migration(self.begin_migration(slot, target_port, 0, keys_batch), keys_batch)

    def _move_keys(self, migration: Migration, limit: int | None, keys_batch: int) -> None:
        source = self.client(migration.source_port)
        try:
            while limit is None or limit > 0:
                count = keys_batch if limit is None else min(keys_batch, limit)
                keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", migration.slot, count)
                if not keys:
                    return
                source.execute_command("MIGRATE", "127.0.0.1", migration.target_port, "", 0,
                                       MIGRATE_TIMEOUT_MS, "KEYS", *keys)
                migration.moved_keys.extend(keys)
                if limit is not None:
                    limit -= len(keys)
        finally:
            source.close()

    # -- failures --------------------------------------------------------------

    def failover(self, master_port: int, timeout: float = SETTLE_TIMEOUT) -> int:
        """CLUSTER FAILOVER on a replica of `master_port` (no write is lost:
        the replica catches up first); wait until every node sees the swap.
        Returns the new master's port."""
        replica_port = self._a_replica_of(master_port)
        self._admin(replica_port).execute_command("CLUSTER", "FAILOVER")
        self._wait_for_promotion(replica_port, master_port, timeout)
        return replica_port

    def kill_master(self, master_port: int, timeout: float = SETTLE_TIMEOUT) -> int:
        """SIGKILL the master on `master_port`; wait until every live node has
        marked it FAIL and agrees on the replica that took its slots.
        Returns that replica's port."""
        candidates = {port for _, port in self.replicas_of(master_port)}
        if not candidates:
            raise LookupError(f"master {master_port} has no replica to promote")
        self._forget_admin(master_port)
        self.servers[master_port].kill()
        promoted: list[int] = []

        def a_candidate_took_over(nodes: list[NodeView]) -> bool:
            promoted[:] = [node.port for node in nodes
                           if node.port in candidates and node.is_master and node.slots]
            return bool(promoted)

        self.wait_until_settled(timeout, a_candidate_took_over)
        return promoted[0]

    def restart_node(self, port: int, timeout: float = SETTLE_TIMEOUT) -> None:
        """Start a killed node again with its own nodes.conf: a former master
        learns it was replaced and rejoins as a replica of its successor."""
        self._forget_admin(port)
        self.servers[port].start()
        self.wait_until_settled(timeout)

    def heal(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Back to a whole cluster after a test: killed nodes restarted, open
        migrations finished, everything settled. Roles stay where they are."""
        for port in sorted(set(self.servers) - set(self.live_ports())):
            self._forget_admin(port)
            self.servers[port].start()
        self.wait_until_settled(timeout)
        for migration in list(self.open_migrations):
            self.finish_migration(migration)

    def _a_replica_of(self, master_port: int) -> int:
        replicas = self.replicas_of(master_port)
        if not replicas:
            raise LookupError(f"master {master_port} has no replica")
        return replicas[0][1]

    def _wait_for_promotion(self, new_port: int, old_port: int, timeout: float) -> None:
        def swapped(nodes: list[NodeView]) -> bool:
            new, old = node_on(nodes, new_port), node_on(nodes, old_port)
            return new.is_master and bool(new.slots) and old.master_id == new.id
        self.wait_until_settled(timeout, swapped)

    def _forget_admin(self, port: int) -> None:
        client = self._admin_clients.pop(port, None)
        if client is not None:
            client.close()
