"""``agent_task_queue.events`` without Redis, and the event ids it accepts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from actors.events import EventsUnavailable, InvalidEventId, parse_event_id
from actors.events.model import EventId
from actors.events.replay import current_firing
from middleware.events import NO_EVENTS
from taskstore import InMemoryTaskStore, Run, RunStatus, TaskNotFound
from tests.harness import stub_harness


def test_on_a_broker_without_redis_nothing_is_published_and_reading_says_why() -> None:
    with stub_harness(InMemoryTaskStore()) as app:
        task_id = app.task()
        app.queue.add_task(task_id)

        assert app.runtime.events is NO_EVENTS
        with pytest.raises(EventsUnavailable, match=f"the events of task {task_id} are in Redis"):
            app.queue.events(task_id)
        # arguments and the task are still checked first
        with pytest.raises(InvalidEventId):
            app.queue.events(task_id, after="soon")
        with pytest.raises(TaskNotFound):
            app.queue.events("00000000-0000-4000-8000-0000000000ee")


def test_event_ids_parse_and_order_as_redis_orders_stream_entries() -> None:
    assert parse_event_id("1764584130123-7") == EventId(1764584130123, 7)
    assert parse_event_id(b"0-0") == EventId(0, 0)
    assert parse_event_id("1-10") > parse_event_id("1-9") > parse_event_id("0-99")
    assert str(parse_event_id(f"{2**64 - 1}-{2**64 - 1}")) == f"{2**64 - 1}-{2**64 - 1}"
    for bad in ("", "1", "1-", "-1", "1-2-3", "a-b", "1.5-0", "01-x", None, 1.0, ["1-0"]):
        with pytest.raises(InvalidEventId, match="is not '<milliseconds>-<sequence>'"):
            parse_event_id(bad)


def _run(index: int, attempt: int, status: str) -> Run:
    start = datetime(2026, 12, 1, 10, 0, index, tzinfo=UTC)
    return Run(
        id=f"run-{index}",
        task_id="t",
        attempt=attempt,
        status=RunStatus(status),
        worker_id=None,
        started_at=start,
        finished_at=start,
        error=None,
        stacktrace=None,
        input_tokens=0,
        output_tokens=0,
        cached_input_tokens=0,
        reasoning_tokens=0,
        cost_usd=None,
        transcript=None,
        trace_id=None,
    )


@pytest.mark.parametrize(
    ("history", "current"),
    [
        # retries, a postponement and a stall stay in one firing
        ([(1, "failed"), (2, "postponed"), (2, "stalled"), (2, "failed"), (3, "completed")], [0, 1, 2, 3, 4]),
        # a schedule's next firing, after a completed one
        ([(1, "completed"), (1, "failed"), (2, "completed")], [1, 2]),
        # retry_job after the last attempt failed: attempts start over
        ([(1, "failed"), (2, "failed"), (1, "running")], [2]),
        # a cancelled run ends its firing
        ([(1, "cancelled"), (1, "completed")], [1]),
        ([], []),
    ],
)
def test_the_current_firing_is_the_runs_after_the_last_one_that_ended_an_earlier_firing(
    history: list[tuple[int, str]], current: list[int]
) -> None:
    runs = [_run(index, attempt, status) for index, (attempt, status) in enumerate(history)]

    assert [run.id for run in current_firing(list(reversed(runs)))] == [f"run-{index}" for index in current]
