"""The `redis_cluster` fixture: one local Redis Cluster (3 masters, 3
replicas; tests/redis_cluster.py) per test session, started only when a
test first asks for it, since it costs about 2 s.

Tests share it, so after each test that took it the cluster is made whole
again (`heal()`: killed nodes restarted, open migrations finished). Roles
may have moved after a failover; read them back with `masters()` /
`replicas()` instead of remembering ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from redis_cluster import LocalCluster


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster(masters=3, replicas_per_master=1).start()
    yield cluster
    cluster.close()


@pytest.fixture(autouse=True)
def _heal_redis_cluster_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Only for tests that took `redis_cluster`: the others never start it."""
    if "redis_cluster" not in request.fixturenames:
        yield
        return
    cluster = request.getfixturevalue("redis_cluster")
    yield
    cluster.heal()
