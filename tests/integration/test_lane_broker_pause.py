"""The pause switch is the lane broker's: one Redis key, read by every broker's fetch, cached per message."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
import redis

from actors.broker.lanes import PAUSED_KEY, LaneBroker
from config.errors import ConfigError
from middleware.agent_messages import LANE_OPTION
from taskstore import InMemoryTaskStore
from tests.harness import stub_harness

pytestmark = pytest.mark.integration

NAMESPACE = "pause-test"


@pytest.fixture
def brokers(redis_url: str) -> Iterator[tuple[LaneBroker, LaneBroker]]:
    """A producer's and a worker's broker on the same Redis namespace."""
    made = [
        LaneBroker(client=redis.Redis.from_url(redis_url), middleware=[], namespace=NAMESPACE)
        for _ in range(2)
    ]
    yield made[0], made[1]
    for broker in made:
        broker.client.close()


def message() -> dramatiq.Message[object]:
    return dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={LANE_OPTION: 5})


def test_pausing_one_broker_stops_every_brokers_fetch_until_resumed(
    brokers: tuple[LaneBroker, LaneBroker],
) -> None:
    producer, worker = brokers
    producer.enqueue(message())

    producer.pause()

    assert producer.paused_key == f"{NAMESPACE}:{PAUSED_KEY}"
    assert producer.client.exists(producer.paused_key) == 1
    assert worker.paused()
    assert worker.fetch("q", 10) == []

    producer.resume()

    assert not worker.paused() and producer.client.exists(producer.paused_key) == 0
    assert len(worker.fetch("q", 10)) == 1


def test_a_reading_is_reused_only_while_younger_than_max_age(brokers: tuple[LaneBroker, LaneBroker]) -> None:
    producer, worker = brokers
    assert not worker.paused(max_age_s=60)

    producer.pause()

    assert not worker.paused(max_age_s=60)  # the reading taken just before the pause
    assert worker.paused()  # max_age_s=0: read now
    assert worker.paused(max_age_s=60)


def test_resuming_wakes_the_idle_consumers_of_every_declared_queue(
    brokers: tuple[LaneBroker, LaneBroker],
) -> None:
    producer, _ = brokers
    producer.declare_queue("q")
    producer.pause()

    producer.resume()

    assert producer.client.llen(f"{NAMESPACE}:q.bell") > 0


def test_a_broker_without_the_switch_is_never_paused_and_cannot_be() -> None:
    with stub_harness(InMemoryTaskStore()) as harness:
        assert not harness.queue.is_paused()
        with pytest.raises(ConfigError, match="StubBroker cannot be paused"):
            harness.queue.pause_queue()
        with pytest.raises(ConfigError, match="StubBroker cannot be paused"):
            harness.queue.resume_queue()
