"""AgentTaskQueue on a StubBroker and the in-memory store: validation, lifecycle, retries."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest

from actors.cli.commands import build_parser
from actors.errors import (
    AgentInactive,
    AgentOrganizationMismatch,
    InvalidArgument,
    InvalidContext,
    InvalidDelay,
    InvalidPriority,
    UnknownAgentKind,
)
from config.errors import AgentQueueError
from middleware.task_lifecycle import QUEUED_OPTION
from taskstore import (
    AgentNotFound,
    InMemoryTaskStore,
    InvalidTaskId,
    InvalidTransition,
    RunStatus,
    TaskNotFound,
    TaskStatus,
    TaskStore,
    new_id,
    utcnow,
)
from tests.harness import ORG, OTHER_ORG, Harness, stub_harness

LIFECYCLE = "agentq.lifecycle"

#: Options of a message re-sent for an already queued task, as a redelivery looks.
REDELIVERY: dict[str, Any] = {QUEUED_OPTION: True}


@pytest.fixture
def app() -> Iterator[Harness]:
    with stub_harness(InMemoryTaskStore()) as harness:
        yield harness


def deactivate(app: Harness, agent_id: str) -> None:
    store = app.store
    assert isinstance(store, InMemoryTaskStore)
    store.update_row("ai_agents", agent_id, is_active=False)


def change_kind(app: Harness, agent_id: str, kind: str) -> None:
    """The agent's kind changes after its tasks were created (e.g. to one this deployment lacks)."""
    store = app.store
    assert isinstance(store, InMemoryTaskStore)
    store.update_row("ai_agents", agent_id, kind=kind)


def messages_waiting(app: Harness) -> int:
    return sum(len(queue.queue) for queue in app.broker.queues.values())


# --- bad input: clear errors, nothing changed ---------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "error", "needle"),
    [
        ("agent_id", "not-a-uuid", InvalidTaskId, "'not-a-uuid'"),
        ("agent_id", new_id(), AgentNotFound, "does not exist"),
        ("organization_id", 42, InvalidTaskId, "organization id 42"),
        ("priority", 11, InvalidPriority, "priority 11"),
        ("priority", -1, InvalidPriority, "priority -1"),
        ("priority", True, InvalidPriority, "priority True"),
        ("priority", "5", InvalidPriority, "priority '5'"),
        ("title", "  ", InvalidArgument, "title '  '"),
        ("task_type", "weekly", InvalidArgument, "task_type 'weekly'"),
        ("context", {"when": object()}, InvalidContext, "not JSON-serialisable"),
        ("context", {"x": float("nan")}, InvalidContext, "not JSON-serialisable"),
        ("context", ["a list"], InvalidContext, "must be a JSON object"),
        ("context", {"blob": "x" * 70_000}, InvalidContext, "the limit is 65536"),
    ],
)
def test_create_task_rejects_bad_input_naming_the_value(
    app: Harness, field: str, value: object, error: type[Exception], needle: str
) -> None:
    fields: dict[str, Any] = {"agent_id": app.agent(), "organization_id": ORG, "title": "t"}
    fields[field] = value

    with pytest.raises(error, match=needle.replace("(", r"\(").replace("[", r"\[")) as caught:
        app.queue.create_task(**fields)

    assert isinstance(caught.value, AgentQueueError)
    assert app.store.count_rows("ai_agent_tasks") == 0  # type: ignore[attr-defined]


def test_create_task_refuses_inactive_agents_and_other_organizations_agents(app: Harness) -> None:
    inactive = app.agent(is_active=False)
    with pytest.raises(AgentInactive, match=inactive):
        app.task(inactive)
    foreign = app.agent(organization_id=OTHER_ORG)
    with pytest.raises(AgentOrganizationMismatch, match=foreign):
        app.task(foreign)
    assert app.store.count_rows("ai_agent_tasks") == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "error", "needle"),
    [
        ({"priority": 42}, InvalidPriority, "priority 42"),
        ({"priority": False}, InvalidPriority, "priority False"),
        ({"priority": 2.5}, InvalidPriority, "priority 2.5"),
        ({"delay_ms": -1}, InvalidDelay, "delay_ms -1"),
        ({"delay_ms": True}, InvalidDelay, "delay_ms True"),
        ({"delay_ms": 8 * 24 * 3600 * 1000}, InvalidDelay, "delay_ms 691200000"),
        ({"delay_ms": "10"}, InvalidDelay, "delay_ms '10'"),
    ],
)
def test_add_task_rejects_bad_arguments_and_enqueues_nothing(
    app: Harness, args: dict[str, Any], error: type[Exception], needle: str
) -> None:
    task_id = app.task()

    with pytest.raises(error, match=needle):
        app.queue.add_task(task_id, **args)

    assert app.store.get_task(task_id).status == TaskStatus.PENDING  # type: ignore[union-attr]
    assert messages_waiting(app) == 0


def test_add_task_rejects_malformed_and_unknown_ids(app: Harness) -> None:
    with pytest.raises(InvalidTaskId, match="'nope'"):
        app.queue.add_task("nope")
    with pytest.raises(InvalidTaskId, match="None"):
        app.queue.add_task(None)  # type: ignore[arg-type]
    missing = new_id()
    with pytest.raises(TaskNotFound, match=missing):
        app.queue.add_task(missing)
    assert messages_waiting(app) == 0


def test_add_task_refuses_an_agent_kind_without_actor(app: Harness) -> None:
    agent_id = app.agent()
    task_id = app.task(agent_id)
    change_kind(app, agent_id, "astrology")

    with pytest.raises(UnknownAgentKind, match="'astrology'"):
        app.queue.add_task(task_id)

    assert app.store.get_task(task_id).status == TaskStatus.PENDING  # type: ignore[union-attr]
    assert messages_waiting(app) == 0


def test_create_task_and_create_tasks_refuse_an_agent_kind_without_actor_and_insert_nothing(
    app: Harness,
) -> None:
    store = app.store
    assert isinstance(store, InMemoryTaskStore)
    astrologer, general = app.agent(kind="astrology"), app.agent()

    with pytest.raises(UnknownAgentKind, match=r"agent kind 'astrology' has no actor .*general"):
        app.queue.create_task(agent_id=astrologer, organization_id=ORG, title="Horoscope")
    with pytest.raises(UnknownAgentKind, match=r"^tasks\[1\]: agent kind 'astrology' has no actor"):
        app.queue.create_tasks(
            [
                {"agent_id": general, "organization_id": ORG, "title": "Fine"},
                {"agent_id": astrologer, "organization_id": ORG, "title": "Horoscope"},
            ]
        )

    assert store.count_rows("ai_agent_tasks") == 0


def test_add_task_refuses_an_agent_deactivated_after_the_task_was_created(app: Harness) -> None:
    agent_id = app.agent()
    task_id = app.task(agent_id)
    deactivate(app, agent_id)

    with pytest.raises(AgentInactive):
        app.queue.add_task(task_id)
    assert messages_waiting(app) == 0


def test_adding_twice_is_refused_the_second_time(app: Harness) -> None:
    task_id = app.task()
    app.queue.add_task(task_id)

    with pytest.raises(InvalidTransition, match="is queued"):
        app.queue.add_task(task_id)

    assert messages_waiting(app) == 1


# --- enqueue ---------------------------------------------------------------------------------


def test_add_task_queues_with_priority_and_logs_the_seed_line(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = app.task(priority=5)

    with caplog.at_level(logging.INFO, logger=LIFECYCLE):
        job = app.queue.add_task(task_id, 9, 0)

    assert job.id == task_id and job.status == TaskStatus.QUEUED and job.priority == 9
    assert (
        caplog.messages.count(f"[AgentTaskQueue] Task {task_id} added to queue (priority: 9, delay: 0ms)")
        == 1
    )
    assert messages_waiting(app) == 1


def test_stats_count_waiting_and_delayed_exactly(app: Harness) -> None:
    for _ in range(4):
        app.queue.add_task(app.task())
    app.queue.add_task(app.task(), delay_ms=60_000)
    app.task()  # pending: not in the queue

    stats = app.queue.get_queue_stats()

    assert (stats.waiting, stats.delayed, stats.active, stats.completed, stats.failed, stats.paused) == (
        4,
        1,
        0,
        0,
        0,
        0,
    )


def test_a_bare_send_queues_the_task_like_add_task(app: Harness, caplog: pytest.LogCaptureFixture) -> None:
    task_id = app.task(priority=6)

    with caplog.at_level(logging.INFO, logger=LIFECYCLE):
        app.kinds["general"].send(task_id)

    assert app.store.get_task(task_id).status == TaskStatus.QUEUED  # type: ignore[union-attr]
    assert (
        caplog.messages.count(f"[AgentTaskQueue] Task {task_id} added to queue (priority: 6, delay: 0ms)")
        == 1
    )
    assert messages_waiting(app) == 1


def test_a_bare_send_of_a_missing_or_finished_task_is_refused(app: Harness) -> None:
    with pytest.raises(TaskNotFound):
        app.kinds["general"].send(new_id())
    with pytest.raises(InvalidTaskId):
        app.kinds["general"].send("garbage")
    task_id = app.task()
    app.store.cancel(task_id, now=app.queue.clock())
    with pytest.raises(InvalidTransition, match="is cancelled"):
        app.kinds["general"].send(task_id)
    assert messages_waiting(app) == 0


# --- the worker ------------------------------------------------------------------------------


def test_a_worker_runs_the_agent_and_completes_the_task(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    script = [{"tool": "calculate", "arguments": {"expression": "6 * 7"}}, {"answer": "It is 42"}]
    task_id = app.task(context={"script": script})
    app.queue.add_task(task_id)

    with caplog.at_level(logging.INFO, logger=LIFECYCLE), app.worker() as worker:
        app.drain(worker)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.COMPLETED
    assert job.result == {"output": "It is 42", "turns": 2, "model": "scripted-1"}
    assert job.attempts_made == 1 and job.failed_reason is None and job.stacktrace == []
    [run] = job.runs
    assert run.status == RunStatus.COMPLETED and run.input_tokens > 0 and run.output_tokens > 0
    assert run.transcript is not None and run.transcript[1]["result"] == "42"
    assert job.task.input_tokens == run.input_tokens
    assert f"[AgentTaskQueue] ✓ Job {task_id} completed" in caplog.messages
    stats = app.queue.get_queue_stats()
    assert (stats.waiting, stats.active, stats.completed) == (0, 0, 1)


def test_a_duplicate_message_for_a_completed_task_does_not_run_it_again(app: Harness) -> None:
    task_id = app.task()
    app.queue.add_task(task_id)
    with app.worker() as worker:
        app.drain(worker)
        # Given the task completed, When its message is delivered again,
        app.kinds["general"].send_with_options(args=(task_id,), **REDELIVERY)
        app.drain(worker)

    # Then it did not run a second time.
    assert len(app.store.get_runs(task_id)) == 1
    assert app.store.get_task(task_id).status == TaskStatus.COMPLETED  # type: ignore[union-attr]


def test_a_failing_task_retries_with_backoff_then_is_dead_lettered(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = app.task(app.agent(kind="crashing"))
    app.queue.add_task(task_id)

    with caplog.at_level(logging.INFO, logger=LIFECYCLE), app.worker() as worker:
        app.drain(worker)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.FAILED
    assert job.attempts_made == 3 and job.failed_reason == "crash in attempt 3"
    assert len(job.stacktrace) == 3 and "RuntimeError: crash in attempt 1" in job.stacktrace[0]
    assert [run.status for run in job.runs] == [RunStatus.FAILED] * 3
    failures = [m for m in caplog.messages if m.startswith(f"[AgentTaskQueue] ✗ Job {task_id} failed: ")]
    assert failures == [f"[AgentTaskQueue] ✗ Job {task_id} failed: crash in attempt {n}" for n in (1, 2, 3)]
    assert (
        caplog.messages.count(f"[AgentTaskQueue] ⚠ Job {task_id} moved to dead letter queue after 3 attempts")
        == 1
    )
    starts = [run.started_at for run in job.runs]
    gaps = [(later - earlier).total_seconds() * 1000 for earlier, later in itertools.pairwise(starts)]
    assert gaps[0] >= 10 and gaps[1] >= 20  # backoff 10 ms x 2^(n-1) in the harness
    assert app.queue.get_queue_stats().failed == 1


def test_an_actor_max_retries_caps_the_attempts(app: Harness) -> None:
    task_id = app.task(app.agent(kind="capped"))
    app.queue.add_task(task_id)

    with app.worker() as worker:
        app.drain(worker)

    assert app.store.get_task(task_id).attempts == 2  # type: ignore[union-attr]


def test_retry_job_gives_a_failed_task_a_fresh_set_of_attempts(app: Harness) -> None:
    task_id = app.task(app.agent(kind="crashing"))
    app.queue.add_task(task_id)
    with app.worker() as worker:
        app.drain(worker)
        job = app.queue.retry_job(task_id)
        assert job.status == TaskStatus.QUEUED and job.attempts_made == 0
        app.drain(worker)

    task = app.store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.FAILED and task.attempts == 3
    assert len(app.store.get_runs(task_id)) == 6


class CountingStore(InMemoryTaskStore):
    """The in-memory store, recording the name of every store method called on it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name in STORE_METHODS:
            super().__getattribute__("calls").append(name)
        return value


STORE_METHODS = frozenset(
    name for name in dir(TaskStore) if not name.startswith("_") and callable(getattr(TaskStore, name))
)


def test_add_task_is_one_store_call_when_it_succeeds() -> None:
    store = CountingStore()
    with stub_harness(store) as app:
        task_id = app.task()
        store.calls.clear()

        job = app.queue.add_task(task_id)

        assert store.calls == ["queue_runnable_task"]
        assert job.status == TaskStatus.QUEUED and messages_waiting(app) == 1


def test_create_task_is_one_store_call_when_it_succeeds() -> None:
    store = CountingStore()
    with stub_harness(store) as app:
        agent_id = app.agent()
        store.calls.clear()

        task = app.queue.create_task(agent_id=agent_id, organization_id=ORG, title="one call")

        assert store.calls == ["create_runnable_task"]
        assert task.status == TaskStatus.PENDING


def test_add_task_refused_by_the_fast_path_says_why_and_changes_nothing() -> None:
    store = CountingStore()
    with stub_harness(store) as app:
        task_id = app.task()
        task = store.get_task(task_id)
        assert task is not None
        store.update_row("ai_agents", task.agent_id, is_active=False)
        store.calls.clear()

        with pytest.raises(AgentInactive):
            app.queue.add_task(task_id)

        assert store.calls == ["queue_runnable_task", "get_task", "get_agent"]
        assert store.get_task(task_id).status == TaskStatus.PENDING  # type: ignore[union-attr]
        assert messages_waiting(app) == 0


def test_retry_job_makes_one_write_and_reads_only_the_task_its_agent_and_runs() -> None:
    store = CountingStore()
    with stub_harness(store) as app:
        task_id = app.task(app.agent(kind="crashing"))
        app.queue.add_task(task_id)
        with app.worker() as worker:
            app.drain(worker)
        store.calls.clear()

        job = app.queue.retry_job(task_id)

        assert store.calls == ["get_task", "get_agent", "requeue_failed", "get_runs"]
        assert job.status == TaskStatus.QUEUED and len(job.runs) == 3
        assert messages_waiting(app) == 1


def test_retry_dead_letters_reads_each_agent_once(app: Harness) -> None:
    agent_id = app.agent(kind="crashing")
    task_ids = [app.task(agent_id) for _ in range(3)]
    app.queue.add_tasks(task_ids)
    with app.worker() as worker:
        app.drain(worker)

    assert app.queue.retry_dead_letters() == 3
    assert [app.store.get_task(task_id).status for task_id in task_ids] == [TaskStatus.QUEUED] * 3  # type: ignore[union-attr]
    assert messages_waiting(app) == 3


def test_an_agent_kind_returns_its_result_to_dramatiq_and_a_pipeline_receives_it(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[Any] = []

    @dramatiq.actor(broker=app.broker, actor_name="after_the_agent")
    def after_the_agent(result: Any) -> None:
        received.append(result)

    task_id = app.task(context={"script": [{"answer": "piped"}]})
    target = after_the_agent.message_with_options().asdict()  # the agent's result is appended

    with caplog.at_level(logging.WARNING), app.worker() as worker:
        app.kinds["general"].send_with_options(args=(task_id,), pipe_target=target)
        app.drain(worker)

    assert received == [{"output": "piped", "turns": 1, "model": "scripted-1"}]
    assert app.store.get_task(task_id).result == received[0]  # type: ignore[union-attr]
    assert not [message for message in caplog.messages if "returned a value" in message]


def test_dramatiq_still_warns_about_an_ordinary_actor_whose_value_is_discarded(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    @dramatiq.actor(broker=app.broker, actor_name="returns_a_value")
    def returns_a_value() -> int:
        return 1

    task_id = app.task()
    with caplog.at_level(logging.WARNING), app.worker() as worker:
        returns_a_value.send()
        app.queue.add_task(task_id)
        app.drain(worker)

    warnings = [message for message in caplog.messages if "returned a value" in message]
    assert len(warnings) == 1 and "'returns_a_value'" in warnings[0]


def test_retry_job_refuses_a_task_that_has_not_failed(app: Harness) -> None:
    task_id = app.task()
    with pytest.raises(InvalidTransition, match="only failed jobs can be retried"):
        app.queue.retry_job(task_id)
    with pytest.raises(TaskNotFound):
        app.queue.retry_job(new_id())


def test_retry_job_takes_resume_as_a_bool_only(app: Harness) -> None:
    task_id = app.task()
    with pytest.raises(InvalidArgument, match="resume 'yes' must be True or False"):
        app.queue.retry_job(task_id, resume="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidTransition, match="only failed jobs can be retried"):
        app.queue.retry_job(task_id, resume=True)
    assert build_parser().parse_args(["retry", task_id, "--resume"]).resume is True
    assert build_parser().parse_args(["retry", task_id]).resume is False


def test_a_non_retryable_error_fails_at_once(app: Harness) -> None:
    agent_id = app.agent()
    task_id = app.task(agent_id)
    app.queue.add_task(task_id)
    deactivate(app, agent_id)

    with app.worker() as worker:
        app.drain(worker)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.FAILED and job.attempts_made == 1
    assert job.failed_reason == f"agent {agent_id!r} of task {task_id!r} is inactive"


def test_a_scripted_non_retryable_failure_fails_at_once(app: Harness) -> None:
    task_id = app.task(context={"script": [{"fail": "invalid API key", "retryable": False}]})
    app.queue.add_task(task_id)

    with app.worker() as worker:
        app.drain(worker)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.FAILED and job.attempts_made == 1
    assert job.failed_reason is not None and "invalid API key" in job.failed_reason


def test_a_vanished_task_is_skipped_and_the_worker_keeps_going(app: Harness) -> None:
    doomed = app.task()
    app.queue.add_task(doomed)
    app.store.delete_row("ai_agent_tasks", doomed)  # type: ignore[attr-defined]
    survivor = app.task()
    app.queue.add_task(survivor)

    with app.worker() as worker:
        app.drain(worker)

    assert app.store.get_task(survivor).status == TaskStatus.COMPLETED  # type: ignore[union-attr]


def test_remove_job_cancels_a_waiting_job_so_the_worker_skips_it(app: Harness) -> None:
    task_id = app.task()
    app.queue.add_task(task_id, delay_ms=50)

    app.queue.remove_job(task_id)
    with app.worker() as worker:
        app.drain(worker)

    assert app.store.get_task(task_id).status == TaskStatus.CANCELLED  # type: ignore[union-attr]
    assert app.store.get_runs(task_id) == []
    assert app.queue.get_queue_stats().delayed == 0


def test_remove_job_asks_a_running_job_to_stop_and_refuses_unknown_ids(app: Harness) -> None:
    task_id = app.task()
    app.queue.add_task(task_id)
    app.store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=utcnow(), now=utcnow())

    app.queue.remove_job(task_id)

    assert app.store.cancel_requested(task_id) is True
    with pytest.raises(TaskNotFound):
        app.queue.remove_job(new_id())
    with pytest.raises(InvalidTaskId):
        app.queue.remove_job("x")


def test_get_job_of_an_unknown_task_is_none_and_of_a_malformed_id_an_error(app: Harness) -> None:
    assert app.queue.get_job(new_id()) is None
    with pytest.raises(InvalidTaskId, match="job id '42'"):
        app.queue.get_job("42")


def test_cleanup_jobs_applies_the_configured_retention(app: Harness) -> None:
    ids = [app.task() for _ in range(3)]
    for task_id in ids:
        app.queue.add_task(task_id)
    with app.worker() as worker:
        app.drain(worker)
    app.queue.retention = type(app.queue.retention)(completed_count=1)

    result = app.queue.cleanup_jobs()

    assert result.archived_completed == 2
    assert app.queue.get_queue_stats().completed == 1
    assert sum(app.queue.get_job(task_id) is None for task_id in ids) == 2
    assert all(app.store.get_task(task_id) is not None for task_id in ids)


def test_a_failed_attempts_transcript_is_stored_redacted() -> None:
    from config.redaction import register_secrets

    secret = "sk-test-transcript-secret-0123456789"
    register_secrets(secret)
    store = InMemoryTaskStore()
    with stub_harness(store, max_attempts=1) as app:
        agent_id = app.agent(allowed_tools=("calculate",))
        script = [
            {"tool": "calculate", "arguments": {"expression": "1+1", "note": f"key {secret}"}},
            {"fail": "the model gave up", "retryable": False},
        ]
        task_id = app.task(agent_id, context={"script": script})
        app.queue.add_task(task_id)
        with app.worker() as worker:
            app.drain(worker)

    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.FAILED
    [run] = store.get_runs(task_id)
    assert run.transcript, "the failed attempt's transcript was not stored"
    assert "[Filtered]" in str(run.transcript) and secret not in str(run.transcript)
