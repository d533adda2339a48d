"""The local Redis Cluster fixture (tests/redis_cluster.py), checked with raw
redis-py only: its slot map, and each cluster event it provokes as a client
meets it (MOVED, ASK, TRYAGAIN, a manual failover and the NOSCRIPT that
follows it, a killed master).

Recovery times are logged and recorded as test properties; run with
`-o log_cli=true --log-cli-level=INFO` to see them."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, NoScriptError, TryAgainError

from cluster_topology import SLOTS
from redis_cluster import LocalCluster

logger = logging.getLogger(__name__)
HANG_BOUND = 30.0  # seconds: catches a hang, not a slow machine


def tag_on(cluster: LocalCluster, port: int) -> str:
    """A fresh hash tag whose slot the master on `port` owns."""
    owned = next(node.slots for node in cluster.view() if node.port == port)
    prefix = uuid.uuid4().hex[:8]
    return next(f"{prefix}-{i}" for i in range(100000)
                if key_slot(f"{prefix}-{i}".encode()) in owned)


def other_master(cluster: LocalCluster, port: int) -> int:
    return next(p for _, p in cluster.masters() if p != port)


def keys_of(client: redis.Redis, slot: int, tag: str) -> int:
    """How many of this test's keys (hash tag `tag`) the node holds in
    `slot`: other tests' keys sharing the session's cluster may be there too."""
    keys = client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100000)
    return sum(1 for key in keys if key.startswith(f"{{{tag}}}".encode()))


def write_keys(client: redis.Redis, tag: str, count: int) -> dict[bytes, bytes]:
    values = {f"{{{tag}}}:{i}".encode(): f"value-{i}".encode() for i in range(count)}
    for key, value in values.items():
        client.set(key, value)
    return values


def test_all_slots_are_covered_by_three_masters_with_one_replica_each(redis_cluster):
    masters, replicas = redis_cluster.masters(), redis_cluster.replicas()
    assert len(masters) == 3 and len(replicas) == 3
    assert redis_cluster.url == "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in masters)
    for _, port in masters:
        assert len(redis_cluster.replicas_of(port)) == 1
    for port in redis_cluster.live_ports():
        with redis_cluster.client(port, decode_responses=True) as node:
            info = node.execute_command("CLUSTER", "INFO")
            assert "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info
            assert "cluster_known_nodes:6" in info
            shards = node.execute_command("CLUSTER", "SHARDS")
        owned = [slot for shard in shards
                 for first, last in zip(shard["slots"][::2], shard["slots"][1::2])
                 for slot in range(first, last + 1)]
        assert sorted(owned) == list(range(SLOTS))  # each slot exactly once
        shard_masters = sorted((n["ip"], n["port"]) for shard in shards for n in shard["nodes"]
                               if n["role"] == "master")
        assert shard_masters == masters
    logger.info("cluster startup: %.2fs", redis_cluster.startup_seconds)
    assert redis_cluster.startup_seconds < HANG_BOUND


def test_keys_with_a_hash_tag_land_on_node_for_key(redis_cluster):
    prefix = uuid.uuid4().hex[:8]
    owners = set()
    with redis_cluster.cluster_client() as cluster:
        for i in range(60):
            keys = [f"{{{prefix}-{i}}}:a", f"{{{prefix}-{i}}}:b"]
            cluster.set(keys[0], "a")
            cluster.set(keys[1], "b")
            host, port = redis_cluster.node_for_key(keys[0])
            assert redis_cluster.node_for_key(keys[1]) == (host, port)
            owners.add(port)
            with redis_cluster.client(port) as owner:
                assert owner.mget(keys) == [b"a", b"b"]
            with redis_cluster.client(other_master(redis_cluster, port)) as stranger:
                with pytest.raises(MovedError) as moved:
                    stranger.get(keys[0])
                assert moved.value.port == port
    assert len(owners) == 3  # 60 tags spread over every master


def test_migrate_slot_moves_every_key_and_the_old_owner_answers_moved(redis_cluster):
    source = redis_cluster.masters()[0][1]
    target = other_master(redis_cluster, source)
    tag = tag_on(redis_cluster, source)
    slot = redis_cluster.key_slot(tag)
    with redis_cluster.cluster_client() as cluster:  # its slot map predates the move
        values = write_keys(cluster, tag, 25)
        redis_cluster.migrate_slot(slot, target, keys_batch=7)
        assert [cluster.get(key) for key in values] == list(values.values())
    assert redis_cluster.node_for_slot(slot)[1] == target
    with redis_cluster.client(target) as new_owner, redis_cluster.client(source) as old_owner:
        assert keys_of(new_owner, slot, tag) == 25
        assert new_owner.mget(list(values)) == list(values.values())
        assert keys_of(old_owner, slot, tag) == 0
        with pytest.raises(MovedError) as moved:
            old_owner.get(next(iter(values)))
        assert (moved.value.slot_id, moved.value.port) == (slot, target)
    for port in redis_cluster.live_ports():  # replicas learnt it too
        with redis_cluster.client(port, decode_responses=True) as node:
            owner = next(shard for shard in node.execute_command("CLUSTER", "SHARDS")
                         if shard["slots"] and any(
                             first <= slot <= last for first, last
                             in zip(shard["slots"][::2], shard["slots"][1::2])))
            assert target in [n["port"] for n in owner["nodes"] if n["role"] == "master"]


def test_mid_migration_a_moved_key_gets_ask_and_a_split_command_tryagain(redis_cluster):
    source = redis_cluster.masters()[1][1]
    target = other_master(redis_cluster, source)
    tag = tag_on(redis_cluster, source)
    slot = redis_cluster.key_slot(tag)
    with redis_cluster.cluster_client() as cluster:
        values = write_keys(cluster, tag, 10)
        migration = redis_cluster.begin_migration(slot, target, keys_to_move=4)
        moved_key = migration.moved_keys[0]
        kept_key = next(key for key in values if key not in migration.moved_keys)
        assert len(migration.moved_keys) == 4
        assert redis_cluster.node_for_slot(slot)[1] == source  # still the owner

        with redis_cluster.client(source) as old_owner, redis_cluster.client(target) as new_owner:
            with pytest.raises(AskError) as ask:
                old_owner.get(moved_key)
            assert type(ask.value) is AskError and ask.value.port == target
            assert old_owner.get(kept_key) == values[kept_key]
            with pytest.raises(TryAgainError):
                old_owner.mget([moved_key, kept_key])
            with pytest.raises(MovedError) as moved:  # the target serves it only after ASKING
                new_owner.get(moved_key)
            assert moved.value.port == source
            asked = new_owner.pipeline(transaction=False)
            asked.execute_command("ASKING").get(moved_key)
            assert asked.execute()[1] == values[moved_key]

        # redis-py's cluster client follows ASK, for reads and for a new key
        assert [cluster.get(key) for key in values] == list(values.values())
        cluster.set(f"{{{tag}}}:new", b"new")
        with redis_cluster.client(target) as new_owner:
            assert keys_of(new_owner, slot, tag) == 5

        redis_cluster.finish_migration(migration)
        assert redis_cluster.node_for_slot(slot)[1] == target
        assert cluster.get(f"{{{tag}}}:new") == b"new"
        with redis_cluster.client(target) as new_owner:
            assert keys_of(new_owner, slot, tag) == 11


def test_failover_swaps_roles_keeps_keys_but_not_scripts(redis_cluster, record_property):
    master = redis_cluster.masters()[0][1]
    replica = redis_cluster.replicas_of(master)[0][1]
    tag = tag_on(redis_cluster, master)
    with redis_cluster.client(master) as old_master:
        values = write_keys(old_master, tag, 50)
        sha = old_master.script_load("return 1")

    started = time.monotonic()
    promoted = redis_cluster.failover(master)
    elapsed = time.monotonic() - started

    record_property("failover_seconds", round(elapsed, 3))
    logger.info("CLUSTER FAILOVER settled in every node's view in %.2fs", elapsed)
    assert elapsed < HANG_BOUND
    assert promoted == replica
    assert ("127.0.0.1", replica) in redis_cluster.masters()
    assert ("127.0.0.1", master) in redis_cluster.replicas()
    assert redis_cluster.replicas_of(replica) == [("127.0.0.1", master)]
    with redis_cluster.client(replica) as new_master:
        assert new_master.mget(list(values)) == list(values.values())
        with pytest.raises(NoScriptError):  # Redis does not replicate its script cache
            new_master.evalsha(sha, 0)
    with redis_cluster.client(master) as demoted, pytest.raises(MovedError) as moved:
        demoted.get(next(iter(values)))
    assert moved.value.port == replica


def test_kill_master_promotes_its_replica_within_a_bounded_time(redis_cluster, record_property):
    master = redis_cluster.masters()[2][1]
    replica = redis_cluster.replicas_of(master)[0][1]
    tag = tag_on(redis_cluster, master)
    with redis_cluster.client(master) as doomed:
        values = write_keys(doomed, tag, 50)
        assert doomed.wait(1, 5000) == 1  # the replica has them before the kill

    started = time.monotonic()
    promoted = redis_cluster.kill_master(master)
    elapsed = time.monotonic() - started
    record_property("kill_master_promotion_seconds", round(elapsed, 3))
    logger.info("SIGKILL of a master -> replica promoted, cluster ok in %.2fs "
                "(cluster-node-timeout %d ms)", elapsed, redis_cluster.node_timeout_ms)
    assert elapsed < HANG_BOUND
    assert promoted == replica
    assert master not in redis_cluster.live_ports()
    assert ("127.0.0.1", master) not in redis_cluster.masters() + redis_cluster.replicas()
    with redis_cluster.client(replica) as new_master:
        assert new_master.mget(list(values)) == list(values.values())
    with redis_cluster.cluster_client() as cluster:
        cluster.set(f"{{{tag}}}:after", b"after")  # the slot takes writes again

    started = time.monotonic()
    redis_cluster.restart_node(master)
    elapsed = time.monotonic() - started
    record_property("restart_as_replica_seconds", round(elapsed, 3))
    logger.info("killed master back as a synced replica in %.2fs", elapsed)
    assert redis_cluster.replicas_of(replica) == [("127.0.0.1", master)]
    with redis_cluster.client(master) as rejoined:
        read = rejoined.pipeline(transaction=False)  # READONLY holds for its connection
        read.execute_command("READONLY").get(f"{{{tag}}}:after")
        assert read.execute()[1] == b"after"


def test_heal_restarts_a_dead_node_and_finishes_an_open_migration(redis_cluster):
    source = redis_cluster.masters()[0][1]
    target = other_master(redis_cluster, source)
    tag = tag_on(redis_cluster, source)
    slot = redis_cluster.key_slot(tag)
    with redis_cluster.client(source) as owner:
        values = write_keys(owner, tag, 6)
    redis_cluster.begin_migration(slot, target)
    dead_replica = redis_cluster.replicas()[0][1]
    redis_cluster.servers[dead_replica].kill()

    redis_cluster.heal()

    assert sorted(redis_cluster.live_ports()) == sorted(redis_cluster.servers)
    assert not redis_cluster.open_migrations
    assert redis_cluster.node_for_slot(slot)[1] == target
    for _, port in redis_cluster.masters():
        assert len(redis_cluster.replicas_of(port)) == 1
    with redis_cluster.client(target) as new_owner:
        assert new_owner.mget(list(values)) == list(values.values())
