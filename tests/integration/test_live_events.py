"""Live events on the real Redis: what each transition and step publishes, and reading them back."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from actors.errors import InvalidArgument
from actors.events import Event, InvalidEventId, stream_key
from actors.events.publisher import LIVE_TTL_S
from taskstore import InMemoryTaskStore, InvalidTaskId, TaskNotFound, TaskStatus
from tests.harness import Harness, redis_harness, wait_until

pytestmark = pytest.mark.integration

TOOL_SCRIPT = {
    "script": [
        {"tool": "calculate", "arguments": {"expression": "131900 - 120400"}},
        {"answer": "Revenue grew by 11500."},
    ]
}


@pytest.fixture
def app(redis_url: str) -> Iterator[Harness]:
    with redis_harness(InMemoryTaskStore(), redis_url) as harness:
        yield harness


def status(app: Harness, task_id: str) -> TaskStatus:
    task = app.store.get_task(task_id)
    assert task is not None
    return task.status


def run_to_end(app: Harness, task_id: str, *, threads: int = 2) -> None:
    with app.worker(threads=threads):
        wait_until(
            lambda: status(app, task_id) in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED),
            what=f"task {task_id} to end",
        )
    app.runtime.events.flush(5)


def read(app: Harness, task_id: str, **kwargs: Any) -> list[Event]:
    return list(app.queue.events(task_id, follow=False, **kwargs))


def types(events: list[Event]) -> list[str]:
    return [event.type for event in events]


def test_a_tool_using_task_publishes_every_transition_and_step_in_order(app: Harness) -> None:
    # Given a task whose agent calls a tool, then answers
    task_id = app.task(context=TOOL_SCRIPT)
    app.queue.add_task(task_id, 7, 0)

    # When a worker runs it
    run_to_end(app, task_id)

    # Then its stream holds every step, in order
    events = read(app, task_id)
    assert types(events) == [
        "queued",
        "running",
        "llm_started",
        "llm_completed",
        "tool_started",
        "tool_completed",
        "llm_started",
        "llm_completed",
        "completed",
    ]
    assert [event.id for event in events] == sorted((event.id for event in events), key=_id_key)
    queued, running, llm_started, llm_completed, tool_started, tool_completed, *_, completed = events
    assert queued.data == {"priority": 7, "delay_ms": 0, "by": "add_task"}
    assert running.data["attempt"] == 1 and running.data["run_id"] and running.data["worker"]
    assert llm_started.data["provider"] == "scripted" and llm_started.data["messages"] == 1
    assert llm_completed.data["tool_calls"] == ["calculate"] and llm_completed.data["input_tokens"] > 0
    assert llm_completed.data["cost_usd"] is None and llm_completed.data["latency_ms"] >= 0
    assert tool_started.data == {"name": "calculate", "call_id": "call_0_0"}
    assert tool_completed.data["is_error"] is False and tool_completed.data["call_id"] == "call_0_0"
    assert completed.data["attempt"] == 1 and completed.data["turns"] == 2
    # and, with AGENTQ_TRACE_CONTENT off, no prompt or output text anywhere
    for event in events:
        assert not {"prompt", "content", "arguments", "result", "output", "text"} & set(event.data), event
        assert event.task_id == task_id and event.at.endswith("+00:00")


def _id_key(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def test_with_trace_content_events_carry_prompts_and_outputs_but_never_secrets(redis_url: str) -> None:
    secret = "sk-proj-abcdefghijklmnop1234567890"
    with redis_harness(InMemoryTaskStore(), redis_url, trace_content=True) as app:
        # Given a task whose description holds something shaped like an API key
        task_id = app.task(context=TOOL_SCRIPT, description=f"use key {secret} if needed")
        app.queue.add_task(task_id)

        run_to_end(app, task_id)
        events = read(app, task_id)

    by_type = {event.type: event for event in reversed(events)}  # the first of each type
    prompt = by_type["llm_started"].data["prompt"]
    assert prompt[0]["role"] == "user" and "[Filtered]" in prompt[0]["content"]
    assert [message["role"] for message in events[6].data["prompt"]] == ["tool"]  # the second call's news
    assert by_type["tool_started"].data["arguments"] == {"expression": "131900 - 120400"}
    assert by_type["tool_completed"].data["result"] == "11500"
    assert by_type["completed"].data["output"] == "Revenue grew by 11500."
    assert all(secret not in str(event.to_dict()) for event in events)


def test_a_failing_task_publishes_retrying_then_failed(app: Harness) -> None:
    task_id = app.task(app.agent(kind="crashing"))
    app.queue.add_task(task_id)

    run_to_end(app, task_id)

    events = read(app, task_id)
    assert types(events) == ["queued", "running", "retrying", "running", "retrying", "running", "failed"]
    first_retry = events[2].data
    assert first_retry["error"] == "crash in attempt 1" and first_retry["next_attempt"] == 2
    assert first_retry["delay_ms"] == 10 and first_retry["attempt"] == 1
    assert events[-1].data["error"] == "crash in attempt 3" and events[-1].data["attempt"] == 3


def test_a_postponed_attempt_publishes_postponed_and_the_next_attempt_runs(app: Harness) -> None:
    task_id = app.task(app.agent(kind="throttled"), context={"throttle": 1, "postpone_ms": 20})
    app.queue.add_task(task_id)

    run_to_end(app, task_id)

    events = read(app, task_id)
    assert types(events)[:4] == ["queued", "running", "postponed", "running"]
    assert types(events)[-1] == "completed"
    assert events[2].data["delay_ms"] == 20 and "rate limited" in events[2].data["reason"]
    assert events[2].data["cause"] == "provider_429"  # the harness's throttled kind raises a 429


def test_removing_a_waiting_task_publishes_cancelled(app: Harness) -> None:
    task_id = app.task()
    app.queue.add_task(task_id, None, 60_000)

    app.queue.remove_job(task_id)
    app.runtime.events.flush(5)

    events = read(app, task_id)
    assert types(events) == ["queued", "cancelled"]
    assert events[0].data["delay_ms"] == 60_000 and events[1].data == {"by": "remove_job"}


def test_a_running_task_asked_to_stop_publishes_cancelled(app: Harness) -> None:
    script = {"script": [{"tool": "calculate", "arguments": {"expression": "1+1"}, "sleep_ms": 400}]}
    task_id = app.task(context=script)
    app.queue.add_task(task_id)
    with app.worker():
        wait_until(lambda: status(app, task_id) == TaskStatus.RUNNING, what="the run to start")
        app.queue.remove_job(task_id)
        wait_until(lambda: status(app, task_id) == TaskStatus.CANCELLED, what="the cancellation")
    app.runtime.events.flush(5)

    events = read(app, task_id)
    assert types(events)[:2] == ["queued", "running"] and types(events)[-1] == "cancelled"


def test_a_bare_send_and_add_tasks_publish_queued(app: Harness) -> None:
    sent, first, second = app.task(), app.task(), app.task()

    app.kinds["general"].send(sent)
    app.queue.add_tasks([first, second], 3, 0)
    app.runtime.events.flush(5)

    assert [event.data for event in read(app, sent)] == [{"priority": 5, "delay_ms": 0, "by": "send"}]
    for task_id in (first, second):
        assert [event.data for event in read(app, task_id)] == [
            {"priority": 3, "delay_ms": 0, "by": "add_tasks"}
        ]


def test_a_retried_job_is_followed_through_its_first_failure_to_its_completion(app: Harness) -> None:
    # Given a task that failed for good (its agent kind crashed three times)
    task_id = app.task(app.agent(kind="capped"))
    app.queue.add_task(task_id)
    run_to_end(app, task_id)
    # and whose agent is now one that works, retried
    store = app.store
    assert isinstance(store, InMemoryTaskStore)
    store.update_row("ai_agent_tasks", task_id, agent_id=app.agent())
    app.queue.retry_job(task_id)

    # When it is followed from the beginning while a worker runs it
    with app.worker():
        events = list(app.queue.events(task_id, follow=True, timeout_s=30))

    # Then the follow went past the first "failed", to the retry's end
    assert types(events)[:5] == ["queued", "running", "retrying", "running", "failed"]
    assert events[5].type == "queued" and events[5].data["by"] == "retry_job"
    assert types(events)[-1] == "completed"


def test_after_an_id_only_later_events_are_read(app: Harness) -> None:
    task_id = app.task(context=TOOL_SCRIPT)
    app.queue.add_task(task_id)
    run_to_end(app, task_id)
    events = read(app, task_id)

    later = read(app, task_id, after=events[2].id)

    assert later == events[3:]
    assert read(app, task_id, after=events[-1].id) == []


def test_a_follow_stops_at_the_terminal_event_and_a_waiting_follow_at_its_timeout(app: Harness) -> None:
    done, waiting = app.task(), app.task()
    app.queue.add_task(done)
    run_to_end(app, done)

    # A follow of an ended task stops after its last event (the timeout would be 60 s)
    assert types(list(app.queue.events(done, follow=True, timeout_s=60)))[-1] == "completed"
    # A follow of a task nobody runs ends at its timeout, with what there was
    assert types(list(app.queue.events(waiting, follow=True, timeout_s=0.3))) == []
    app.queue.add_task(waiting)
    assert types(list(app.queue.events(waiting, follow=True, timeout_s=0.3))) == ["queued"]


def test_a_follower_sees_events_as_they_happen(app: Harness) -> None:
    script = {
        "script": [
            {"tool": "calculate", "arguments": {"expression": "1+1"}},
            {"answer": "2", "sleep_ms": 500},
        ]
    }
    task_id = app.task(context=script)
    seen: list[str] = []

    def follow() -> None:
        for event in app.queue.events(task_id, timeout_s=30):
            seen.append(event.type)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()  # the task is still pending: its stream does not exist yet

    app.queue.add_task(task_id)
    with app.worker():
        wait_until(lambda: "tool_started" in seen, what="the follower to see the tool start")
        assert status(app, task_id) == TaskStatus.RUNNING  # seen while the task was still running
        follower.join(timeout=30)

    assert not follower.is_alive() and seen[-1] == "completed"


def test_a_streams_ttl_is_long_while_the_task_lives_and_short_once_it_ended(app: Harness) -> None:
    client: redis.Redis = app.broker.client  # type: ignore[attr-defined]
    task_id = app.task()
    app.queue.add_task(task_id, None, 60_000)
    app.runtime.events.flush(5)
    assert LIVE_TTL_S - 60 < client.ttl(stream_key(task_id)) <= LIVE_TTL_S

    app.queue.remove_job(task_id)
    app.runtime.events.flush(5)
    assert 0 < client.ttl(stream_key(task_id)) <= app.runtime.settings.events_ttl_s


def test_bad_arguments_are_refused_before_anything_is_read(app: Harness) -> None:
    task_id = app.task()
    missing = "00000000-0000-4000-8000-0000000000aa"
    # Each raises at the call, before any iteration
    with pytest.raises(TaskNotFound, match=missing):
        app.queue.events(missing)
    with pytest.raises(InvalidTaskId, match="'not-a-uuid'"):
        app.queue.events("not-a-uuid")
    for after in ("abc", "1-2-3", "-1-0", "12", "1-", " 1-0", f"{2**64}-0", 12, b"\xff"):
        with pytest.raises(InvalidEventId, match="is not '<milliseconds>-<sequence>'"):
            app.queue.events(task_id, after=after)  # type: ignore[arg-type]
    for timeout in (0, -1, math.nan, math.inf, True, "5"):
        with pytest.raises(InvalidArgument, match="timeout_s"):
            app.queue.events(task_id, timeout_s=timeout)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="follow"):
        app.queue.events(task_id, follow="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("trace_content", [False, True])
def test_a_streaming_agents_text_is_published_only_with_trace_content(
    redis_url: str, trace_content: bool
) -> None:
    answer = "Q3 revenue grew by 11,500 over Q2, nine and a half percent."
    with redis_harness(
        InMemoryTaskStore(), redis_url, trace_content=trace_content, events_delta_flush_ms=0
    ) as app:
        task_id = app.task(app.agent(stream=True), context={"script": [{"answer": answer}]})
        app.queue.add_task(task_id)
        run_to_end(app, task_id)
        events = read(app, task_id)

    deltas = [event.data for event in events if event.type == "llm_delta"]
    assert types(events)[2:3] == ["llm_started"] and types(events)[-2:] == ["llm_completed", "completed"]
    assert len(deltas) == len(answer.split())  # the scripted provider streams word by word
    assert sum(data["chars"] for data in deltas) == len(answer)
    if trace_content:
        assert "".join(data["text"] for data in deltas) == answer
    else:
        assert all("text" not in data for data in deltas)
