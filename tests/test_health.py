"""Redis outage bookkeeping (greenq/health.py): one error event per outage,
and a back-off with jitter, so that the processes of a queue do not all
retry at the same moments after a Redis restart."""

import pytest
import redis

from greenq import config
from greenq.errors import BrokerError
from greenq.health import Health


@pytest.fixture
def refused() -> redis.ConnectionError:
    """A real failed call: nothing listens on port 1."""
    client = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError) as info:
        client.ping()
    return info.value


def envelope(failure: int) -> float:
    first, longest = config.RECONNECT_BACKOFF
    return min(longest, first * 2 ** failure)


def test_processes_in_one_outage_retry_at_different_moments(refused):
    events = []
    processes = [Health(lambda *event: events.append(event)) for _ in range(3)]
    waits = [[health.trouble(refused) for _ in range(12)] for health in processes]
    for failure, moments in enumerate(zip(*waits)):
        assert len(set(moments)) == 3, (failure, moments)  # not in lockstep, even at the cap
        for wait in moments:  # grows as before, each draw within [d/2, d]
            assert envelope(failure) / 2 <= wait <= envelope(failure)
    assert [(name, type(exc)) for name, exc in events] == [("error", BrokerError)] * 3


def test_the_back_off_starts_small_again_once_redis_is_back(refused):
    health = Health(lambda *event: None)
    for _ in range(8):
        health.trouble(refused)
    health.ok()
    assert not health.down
    assert health.trouble(refused) <= config.RECONNECT_BACKOFF[0]
