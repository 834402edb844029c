"""Priority lanes, fair turns, start rate limits, pause/resume and the per-organization cap, on real Redis."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta
from typing import Any

import dramatiq
import pytest

from actors.broker.lanes import LaneBroker
from middleware import build_middleware
from middleware.agent_messages import LANE_OPTION, ORG_OPTION
from middleware.task_lifecycle import send_queued
from taskstore import InMemoryTaskStore, TaskStatus, utcnow
from tests.harness import OTHER_ORG, Harness, harness_settings, redis_harness, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def store() -> InMemoryTaskStore:
    return InMemoryTaskStore()


def started_order(app: Harness, task_ids: list[str]) -> list[str]:
    tasks = [app.store.get_task(task_id) for task_id in task_ids]
    started = [task for task in tasks if task is not None and task.started_at is not None]
    return [task.id for task in sorted(started, key=lambda task: task.started_at or task.created_at)]


def all_completed(app: Harness, task_ids: list[str]) -> bool:
    return all(app.store.get_task(task_id).status == TaskStatus.COMPLETED for task_id in task_ids)  # type: ignore[union-attr]


def sleepy(ms: int) -> dict[str, Any]:
    return {"script": [{"answer": "ok", "sleep_ms": ms}]}


def test_lanes_are_fetched_by_priority_then_plain_list_at_five(
    redis_url: str, store: InMemoryTaskStore
) -> None:
    with redis_harness(store, redis_url) as app:
        broker = app.broker
        assert isinstance(broker, LaneBroker)
        actor = app.kinds["general"]
        sent: list[tuple[int | None, str]] = []
        for lane in (1, 10, None, 5, 7):
            options: dict[str, Any] = {"agentq_queued": True}
            if lane is not None:
                options.update({LANE_OPTION: lane, ORG_OPTION: "org"})
            message = actor.message_with_options(
                args=("00000000-0000-4000-8000-00000000000" + str(len(sent)),), **options
            )
            broker.enqueue(message)
            sent.append((lane, message.message_id))

        fetched = [dramatiq.Message.decode(data) for data in broker.fetch("general", 10)]

    lanes = {message_id: lane for lane, message_id in sent}
    assert [lanes[message.message_id] for message in fetched] == [10, 7, 5, None, 1]


def test_organizations_take_turns_within_a_priority(redis_url: str, store: InMemoryTaskStore) -> None:
    with redis_harness(store, redis_url) as app:
        broker = app.broker
        assert isinstance(broker, LaneBroker)
        actor = app.kinds["general"]
        for org, count in (("big", 6), ("small", 2)):
            for n in range(count):
                options: dict[str, Any] = {"agentq_queued": True, LANE_OPTION: 5, ORG_OPTION: org, "n": n}
                broker.enqueue(actor.message_with_options(args=(f"{org}-{n}",), **options))

        fetched = [dramatiq.Message.decode(data).args[0] for data in broker.fetch("general", 8)]

    assert fetched[:4] == ["big-0", "small-0", "big-1", "small-1"]
    assert fetched[4:] == ["big-2", "big-3", "big-4", "big-5"]


@pytest.mark.parametrize(("backlog_priority", "urgent_priority"), [(1, 10), (3, 7)])
def test_a_higher_priority_task_overtakes_a_running_backlog(
    redis_url: str, store: InMemoryTaskStore, backlog_priority: int, urgent_priority: int
) -> None:
    threads, prefetch = 2, 4  # Dramatiq prefetches 2 messages per thread
    # As many runs in flight as threads: with the default 100 slots the runs wait on the event loop and the
    # two threads claim the whole backlog within a fraction of a second, so there is nothing left to overtake.
    with redis_harness(store, redis_url, queue_concurrency=threads) as app:
        agent = app.agent()
        backlog = [app.task(agent, priority=backlog_priority, context=sleepy(20)) for _ in range(80)]
        for task_id in backlog:
            app.queue.add_task(task_id)

        with app.worker(threads=threads):
            wait_until(lambda: len(started_order(app, backlog)) >= 10, what="the backlog to be under way")
            urgent = app.task(agent, priority=urgent_priority, context=sleepy(20))
            added_at = app.queue.add_task(urgent).task.queued_at
            wait_until(lambda: all_completed(app, [urgent]), timeout_s=30, what="the urgent task")

        assert added_at is not None
        urgent_start = app.store.get_task(urgent).started_at  # type: ignore[union-attr]
        assert urgent_start is not None
        starts = [app.store.get_task(task_id).started_at for task_id in backlog]  # type: ignore[union-attr]
        overtaken_by = [start for start in starts if start is not None and added_at <= start < urgent_start]
        assert len(overtaken_by) <= threads + prefetch, len(overtaken_by)
        assert sum(start is None for start in starts) > 0  # the backlog was still waiting: it was overtaken


def test_another_tenants_tasks_do_not_wait_for_a_burst(redis_url: str, store: InMemoryTaskStore) -> None:
    with redis_harness(store, redis_url) as app:
        agent_a = app.agent()
        burst = [app.task(agent_a, context=sleepy(10)) for _ in range(150)]
        for task_id in burst:
            app.queue.add_task(task_id)
        agent_b = app.agent(organization_id=OTHER_ORG)
        small = [app.task(agent_b, organization_id=OTHER_ORG, context=sleepy(10)) for _ in range(5)]
        for task_id in small:
            app.queue.add_task(task_id)

        with app.worker(threads=2):
            wait_until(
                lambda: all_completed(app, [*burst, *small]), timeout_s=60, what="both tenants to finish"
            )

        order = started_order(app, [*burst, *small])
        last_of_b = max(order.index(task_id) for task_id in small)
        assert last_of_b < 20, f"B's last task started {last_of_b}th of {len(order)}"


def test_starts_never_exceed_the_rate_limit_in_any_window(redis_url: str, store: InMemoryTaskStore) -> None:
    with redis_harness(store, redis_url, rate_limit_max=5, rate_limit_window_ms=1000) as app:
        agent = app.agent()
        ids = [app.task(agent) for _ in range(16)]
        for task_id in ids:
            app.queue.add_task(task_id)

        with app.worker(threads=4):
            wait_until(lambda: all_completed(app, ids), timeout_s=30, what="the limited tasks")

        starts = sorted(app.store.get_task(task_id).started_at or utcnow() for task_id in ids)  # type: ignore[union-attr]
        assert (starts[-1] - starts[0]).total_seconds() >= 2.9  # 16 starts at 5 a second
        # No 1-second window of started_at holds 6 starts (started_at is the limiter's admission time).
        window = timedelta(seconds=1)
        assert all(starts[i + 5] - starts[i] >= window for i in range(len(starts) - 5))
        assert all(app.store.get_task(task_id).attempts == 1 for task_id in ids)  # type: ignore[union-attr]


class SkipCounter(dramatiq.Middleware):
    """Counts messages skipped by the middleware (a capped organization's put-backs among them)."""

    def __init__(self) -> None:
        self.skipped = 0

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.skipped += 1


def test_a_capped_organization_takes_no_start_slot_from_the_others(
    redis_url: str, store: InMemoryTaskStore
) -> None:
    """5 starts a minute; org A (cap 1) has 20 tasks waiting, retried every 0.5-1 s: B's 3 still start."""
    with redis_harness(
        store, redis_url, org_concurrency=1, rate_limit_max=5, rate_limit_window_ms=60_000
    ) as app:
        skips = SkipCounter()
        app.broker.add_middleware(skips)
        agent_a = app.agent()
        capped = [app.task(agent_a, context=sleepy(2500)) for _ in range(20)]
        for task_id in capped:
            app.queue.add_task(task_id)
        agent_b = app.agent(organization_id=OTHER_ORG)
        others = [app.task(agent_b, organization_id=OTHER_ORG, context=sleepy(10)) for _ in range(3)]

        with app.worker(threads=4):
            # Without refunds, these put-backs alone would use up the window's 5 slots.
            wait_until(lambda: skips.skipped >= 12, timeout_s=30, what="A's held-back tasks to be retried")
            for task_id in others:
                app.queue.add_task(task_id)
            wait_until(lambda: all_completed(app, others), timeout_s=20, what="B's tasks within the window")
        started = [t for t in app.store.get_tasks([*capped, *others]) if t.started_at is not None]

        assert skips.skipped >= 12
        assert all(task.attempts == 1 for task in started)
        # Slots used in the window are the tasks that really started, no more.
        assert app.broker.client.zcard("agentq:starts") == len(started)  # type: ignore[attr-defined]
        assert len(started) <= 5


def test_a_duplicate_message_gives_its_start_slot_back(redis_url: str, store: InMemoryTaskStore) -> None:
    with redis_harness(store, redis_url, rate_limit_max=5, rate_limit_window_ms=60_000) as app:
        skips = SkipCounter()
        app.broker.add_middleware(skips)
        task_id = app.task()
        app.queue.add_task(task_id)
        with app.worker(threads=2):
            wait_until(lambda: all_completed(app, [task_id]), what="the task")
            for _ in range(3):  # redeliveries of a finished task: each is skipped at the claim
                send_queued(app.broker, "general", task_id)
            wait_until(lambda: skips.skipped == 3, what="the duplicates to be skipped")

        assert app.broker.client.zcard("agentq:starts") == 1  # type: ignore[attr-defined]
        assert len(app.store.get_runs(task_id)) == 1


def test_pause_comes_before_the_rate_limit() -> None:
    """A paused message is put back before it could take a start slot."""
    stack = [
        type(m).__name__ for m in build_middleware(harness_settings(rate_limit_max=5), InMemoryTaskStore())
    ]

    assert stack.index("Pause") < stack.index("StartRateLimit") < stack.index("TaskLifecycle")


def test_pausing_stops_new_starts_everywhere_and_resuming_runs_each_task_once(
    redis_url: str, store: InMemoryTaskStore
) -> None:
    with redis_harness(store, redis_url) as app:
        agent = app.agent()
        active = [app.task(agent, context=sleepy(800)) for _ in range(2)]
        for task_id in active:
            app.queue.add_task(task_id)
        waiting = [app.task(agent, context=sleepy(10)) for _ in range(20)]

        with app.worker(threads=2):
            wait_until(
                lambda: all(app.store.get_task(t).status == TaskStatus.RUNNING for t in active),  # type: ignore[union-attr]
                what="the active tasks to start",
            )
            app.queue.pause_queue()
            for task_id in waiting:
                app.queue.add_task(task_id)
            wait_until(lambda: all_completed(app, active), what="the active tasks to finish")
            stats = app.queue.get_queue_stats()
            assert app.queue.is_paused() and (stats.waiting, stats.paused) == (0, 20)
            assert all(app.store.get_task(task_id).started_at is None for task_id in waiting)  # type: ignore[union-attr]

            app.queue.resume_queue()
            wait_until(lambda: all_completed(app, waiting), timeout_s=30, what="the held tasks after resume")

        assert all(len(app.store.get_runs(task_id)) == 1 for task_id in waiting)
        assert not app.queue.is_paused()


def test_an_organization_never_runs_more_than_its_cap(redis_url: str, store: InMemoryTaskStore) -> None:
    with redis_harness(store, redis_url, org_concurrency=1) as app:
        agent = app.agent()
        ids = [app.task(agent, context=sleepy(150)) for _ in range(5)]
        for task_id in ids:
            app.queue.add_task(task_id)

        with app.worker(threads=4):
            wait_until(lambda: all_completed(app, ids), timeout_s=30, what="the capped tasks")

        runs = sorted((app.store.get_runs(task_id)[0] for task_id in ids), key=lambda run: run.started_at)
        for earlier, later in itertools.pairwise(runs):
            assert earlier.finished_at is not None and earlier.finished_at <= later.started_at
        assert all(app.store.get_task(task_id).attempts == 1 for task_id in ids)  # type: ignore[union-attr]


def test_grouped_acks_remove_exactly_the_acked_messages(redis_url: str, store: InMemoryTaskStore) -> None:
    """Acks from many threads at once (written together) clear each message's payload and ack entry."""
    with redis_harness(store, redis_url) as app:
        broker = app.broker
        assert isinstance(broker, LaneBroker)
        actor = app.kinds["general"]
        options: dict[str, Any] = {"agentq_queued": True, LANE_OPTION: 5, ORG_OPTION: "org"}
        for index in range(60):
            message = actor.message_with_options(args=(f"00000000-0000-4000-8000-{index:012d}",), **options)
            broker.enqueue(message)
        fetched = [dramatiq.Message.decode(data) for data in broker.fetch("general", 60)]
        ids = [message.options["redis_message_id"] for message in fetched]
        kept = ids[50:]
        acked = iter(ids[:50])
        lock = threading.Lock()

        def ack_some() -> None:
            while True:
                with lock:
                    redis_id = next(acked, None)
                if redis_id is None:
                    return
                broker.ack("general", redis_id)

        threads = [threading.Thread(target=ack_some) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()

        client, ns = broker.client, broker.namespace
        assert sorted(_text(key) for key in client.hkeys(f"{ns}:general.msgs")) == sorted(kept)
        pending = client.smembers(f"{ns}:__acks__.{broker.broker_id}.general")
        assert sorted(_text(key) for key in pending) == sorted(kept)
        assert client.zscore(f"{ns}:__heartbeats__", broker.broker_id) is not None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
