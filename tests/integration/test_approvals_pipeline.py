"""Approvals and cancels through the whole pipeline (OpenAI SDK over HTTP to the fake server, Postgres, Redis,
an in-process worker): a run waits for a person, resumes after the decision, times out, or is cancelled."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from actors.errors import InvalidArgument, NotAwaitingApproval
from actors.events.model import stream_key
from middleware import Reconciler
from taskstore import InvalidTaskId, RunStatus, StepStatus, TaskNotFound, TaskStatus, new_id, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.fakes.http_server import FakeReply
from tests.fakes.openai_server import FakeOpenAIServer, openai_text, openai_tool_calls
from tests.fakes.tools import lines
from tests.harness import Harness, redis_harness, wait_until

pytestmark = pytest.mark.integration

TOOLS = ("tests.fakes.approval_tools:tools",)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def app(server: FakeOpenAIServer, postgres_store: PostgresTaskStore, redis_url: str) -> Iterator[Harness]:
    settings = {
        "openai_api_key": "sk-test-not-a-real-key",
        "openai_base_url": server.base_url,
        "tools": TOOLS,
    }
    with redis_harness(postgres_store, redis_url, **settings) as harness:
        yield harness


def status(app: Harness, task_id: str) -> TaskStatus:
    task = app.store.get_task(task_id)
    assert task is not None
    return task.status


def refund_task(app: Harness, **agent_fields: Any) -> str:
    fields: dict[str, Any] = {"provider": "openai", "model": "gpt-4o-mini", "allowed_tools": ("refund",)}
    fields.update(agent_fields)
    return app.task(app.agent(**fields), title="Refund order 1042")


def refund_reply(
    path: Path, amount: int = 30, reasoning: str | None = "The parcel never arrived."
) -> FakeReply:
    reply = openai_tool_calls(("refund", {"path": str(path), "amount": amount}))
    reply.body["choices"][0]["message"]["content"] = reasoning
    return reply


def first_calls(server: FakeOpenAIServer) -> int:
    """Requests that are a run's first model call (the conversation is the task alone)."""
    return sum(1 for request in server.requests if len(request.body["messages"]) == 1)


def wait_for(app: Harness, task_id: str, wanted: TaskStatus, timeout_s: float = 30) -> None:
    wait_until(lambda: status(app, task_id) == wanted, timeout_s=timeout_s, what=f"task {wanted.value}")


def test_a_run_waits_for_approval_and_after_it_runs_the_tool_once_and_completes(
    app: Harness, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    refunds = tmp_path / "refunds.txt"
    server.enqueue(refund_reply(refunds), openai_text("Refunded 30."))
    task_id = refund_task(app)
    app.queue.add_task(task_id)

    with app.worker(threads=1):
        wait_for(app, task_id, TaskStatus.AWAITING_APPROVAL)
        job = app.queue.get_job(task_id)
        assert job is not None and job.pending_approval is not None
        pending = job.pending_approval
        assert (pending.tool, pending.arguments, pending.reasoning, pending.seq) == (
            "refund",
            {"path": str(refunds), "amount": 30},
            "The parcel never arrived.",
            1,
        )
        assert pending.since == job.task.approval_requested_at and pending.since is not None
        assert (job.attempts_made, job.task.worker_id, lines(refunds)) == (0, None, [])
        assert app.queue.get_queue_stats().awaiting_approval == 1
        assert [item.task_id for item in app.queue.list_approvals()] == [task_id]

        approved = app.queue.approve(task_id, note="under the limit", decided_by="ana@example.com")
        assert approved.status == TaskStatus.QUEUED and approved.pending_approval is None
        wait_for(app, task_id, TaskStatus.COMPLETED)

    job = app.queue.get_job(task_id)
    assert job is not None and job.result is not None and job.result["output"] == "Refunded 30."
    assert lines(refunds) == [f"refund 30 {task_id}:0:1"]
    assert len(server.requests) == 2 and first_calls(server) == 1  # the first model call was not repeated
    assert server.requests[1].body["messages"][-1] == {
        "role": "tool",
        "tool_call_id": server.requests[1].body["messages"][-2]["tool_calls"][0]["id"],
        "content": "refunded 30",
    }
    assert [run.status for run in job.runs] == [RunStatus.AWAITING_APPROVAL, RunStatus.COMPLETED]
    assert job.attempts_made == 1 and job.runs[0].input_tokens == 10 and job.task.input_tokens == 20
    llm, tool, final = app.store.get_steps(task_id)
    assert (llm.status, tool.status, final.status) == ("completed", "completed", "completed")
    assert tool.approval is not None
    assert {key: tool.approval[key] for key in ("decision", "decided_by", "note")} == {
        "decision": "approved",
        "decided_by": "ana@example.com",
        "note": "under the limit",
    }
    assert app.queue.get_queue_stats().awaiting_approval == 0


def test_a_rejected_call_never_runs_and_the_model_reads_the_reason(
    app: Harness, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    refunds = tmp_path / "refunds.txt"
    server.enqueue(refund_reply(refunds), openai_text("I did not refund it."))
    task_id = refund_task(app)
    app.queue.add_task(task_id)

    with app.worker(threads=1):
        wait_for(app, task_id, TaskStatus.AWAITING_APPROVAL)
        app.queue.reject(task_id, "already refunded by card", decided_by="bo")
        wait_for(app, task_id, TaskStatus.COMPLETED)

    assert lines(refunds) == []
    message = server.requests[1].body["messages"][-1]
    assert (message["role"], message["content"]) == ("tool", "rejected by a person: already refunded by card")
    tool = app.store.get_steps(task_id)[1]
    assert tool.status == StepStatus.COMPLETED and tool.approval is not None
    assert (tool.approval["decision"], tool.approval["note"]) == ("rejected", "already refunded by card")


def test_of_concurrent_approvals_one_wins_and_the_tool_runs_once(
    app: Harness, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    refunds = tmp_path / "refunds.txt"
    server.enqueue(refund_reply(refunds), openai_text("Refunded."))
    task_id = refund_task(app)
    app.queue.add_task(task_id)
    with app.worker(threads=2):
        wait_for(app, task_id, TaskStatus.AWAITING_APPROVAL)
        barrier = threading.Barrier(4)
        outcomes: list[str] = []

        def approve(index: int) -> None:
            barrier.wait()
            try:
                app.queue.approve(task_id, decided_by=f"approver-{index}")
                outcomes.append("approved")
            except NotAwaitingApproval:
                outcomes.append("refused")

        threads = [threading.Thread(target=approve, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        wait_for(app, task_id, TaskStatus.COMPLETED)

    assert sorted(outcomes) == ["approved", "refused", "refused", "refused"]
    assert len(lines(refunds)) == 1 and len(server.requests) == 2


def test_a_decision_for_a_task_that_waits_for_nothing_is_a_clear_error(app: Harness) -> None:
    task_id = app.task()
    with pytest.raises(NotAwaitingApproval, match="is pending, not awaiting approval"):
        app.queue.approve(task_id)
    app.queue.add_task(task_id, delay_ms=60_000)
    with pytest.raises(NotAwaitingApproval, match="is queued"):
        app.queue.reject(task_id, "no")
    with pytest.raises(TaskNotFound):
        app.queue.approve(new_id())
    with pytest.raises(InvalidTaskId):
        app.queue.approve("not-a-task")
    for bad in ("", "   ", None, 7):
        with pytest.raises(InvalidArgument, match="reason"):
            app.queue.reject(task_id, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="note"):
        app.queue.approve(task_id, note="x" * 2001)
    with pytest.raises(InvalidArgument, match="decided_by"):
        app.queue.approve(task_id, decided_by=["ana"])  # type: ignore[arg-type]
    assert status(app, task_id) == TaskStatus.QUEUED


def test_a_wait_longer_than_the_timeout_fails_with_approval_timed_out(
    app: Harness, server: FakeOpenAIServer, postgres_url: str, tmp_path: Path
) -> None:
    refunds = tmp_path / "refunds.txt"
    server.enqueue(refund_reply(refunds), refund_reply(refunds))
    stale, fresh = refund_task(app), refund_task(app)
    app.queue.add_tasks([stale, fresh])
    with app.worker(threads=2):
        wait_for(app, stale, TaskStatus.AWAITING_APPROVAL)
        wait_for(app, fresh, TaskStatus.AWAITING_APPROVAL)
    # the first waited eight days; a third row was left awaiting with no step and no time (edited by hand)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE ai_agent_tasks SET approval_requested_at = now() - interval '8 days' WHERE id = %s",
            (stale,),
        )
        broken = app.task()
        conn.execute(
            "UPDATE ai_agent_tasks SET status = 'awaiting_approval', approval_requested_at = NULL"
            " WHERE id = %s",
            (broken,),
        )
    reconciler = Reconciler(app.store, approval_timeout_s=7 * 24 * 3600)

    report = reconciler.reconcile(app.broker)

    assert report.expired_approvals == 2
    job = app.queue.get_job(stale)
    assert job is not None and job.status == TaskStatus.FAILED and job.failed_reason is not None
    assert job.failed_reason.startswith("approval timed out")
    assert {job.id for job in app.queue.list_dead_letters()} == {stale, broken}
    tool = app.store.get_steps(stale)[1]
    assert (
        tool.status == StepStatus.FAILED
        and tool.error is not None
        and tool.error.startswith("approval timed out")
    )
    assert tool.approval is not None and tool.approval["decision"] == "timed_out"
    assert status(app, fresh) == TaskStatus.AWAITING_APPROVAL and status(app, broken) == TaskStatus.FAILED
    with pytest.raises(NotAwaitingApproval):
        app.queue.approve(stale)
    assert lines(refunds) == []


def test_removing_a_waiting_job_cancels_it_and_its_call_never_runs(
    app: Harness, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    refunds = tmp_path / "refunds.txt"
    server.enqueue(refund_reply(refunds))
    task_id = refund_task(app)
    app.queue.add_task(task_id)
    with app.worker(threads=1):
        wait_for(app, task_id, TaskStatus.AWAITING_APPROVAL)

    app.queue.remove_job(task_id)

    assert status(app, task_id) == TaskStatus.CANCELLED
    tool = app.store.get_steps(task_id)[1]
    assert (tool.status, tool.error) == (StepStatus.FAILED, "cancelled")
    with pytest.raises(NotAwaitingApproval):
        app.queue.approve(task_id)


def test_an_agents_approval_tools_make_its_calls_wait_and_a_waiting_task_holds_no_org_slot(
    server: FakeOpenAIServer, postgres_store: PostgresTaskStore, redis_url: str, tmp_path: Path
) -> None:
    settings = {
        "openai_api_key": "sk-test",
        "openai_base_url": server.base_url,
        "tools": ("tests.fakes.tools:tools",),
        "org_concurrency": 1,
    }
    notes = tmp_path / "notes.txt"
    server.enqueue(
        openai_tool_calls(("append_line", {"path": str(notes), "text": "hello"})), openai_text("done")
    )
    with redis_harness(postgres_store, redis_url, **settings) as app:
        agent = app.agent(
            provider="openai",
            model="gpt-4o-mini",
            allowed_tools=("append_line",),
            approval_tools=("append_line",),
        )
        waiting = app.task(agent, title="Write a note")
        other = app.task(app.agent(), title="Same organization", context={"script": [{"answer": "ok"}]})
        app.queue.add_task(waiting)
        with app.worker(threads=1):
            wait_for(app, waiting, TaskStatus.AWAITING_APPROVAL)
            app.queue.add_task(other)  # the organization's only slot is free: the waiting task holds none
            wait_for(app, other, TaskStatus.COMPLETED)
            assert lines(notes) == []
            app.queue.approve(waiting)
            wait_for(app, waiting, TaskStatus.COMPLETED)
    assert len(lines(notes)) == 1


def test_with_the_step_ledger_off_a_call_that_needs_approval_fails_the_task_clearly(
    server: FakeOpenAIServer, postgres_store: PostgresTaskStore, redis_url: str, tmp_path: Path
) -> None:
    settings = {
        "openai_api_key": "sk",
        "openai_base_url": server.base_url,
        "tools": TOOLS,
        "step_ledger": False,
    }
    server.enqueue(refund_reply(tmp_path / "refunds.txt"))
    with redis_harness(postgres_store, redis_url, **settings) as app:
        task_id = refund_task(app)
        app.queue.add_task(task_id)
        with app.worker(threads=1):
            wait_for(app, task_id, TaskStatus.FAILED)
        job = app.queue.get_job(task_id)
    assert job is not None and job.failed_reason is not None and "AGENTQ_STEP_LEDGER" in job.failed_reason
    assert job.attempts_made == 1


# --- cancelling a run in the middle of a call ----------------------------------------------------------


def test_remove_job_interrupts_a_model_call_in_flight(app: Harness, server: FakeOpenAIServer) -> None:
    server.enqueue(FakeReply(openai_text("too late").body, delay_s=30))
    task_id = app.task(
        app.agent(provider="openai", model="gpt-4o-mini", allowed_tools=()), title="Slow answer"
    )
    app.queue.add_task(task_id)
    with app.worker(threads=1):
        wait_until(lambda: len(server.requests) == 1, what="the model call")
        asked = time.monotonic()
        app.queue.remove_job(task_id)
        wait_for(app, task_id, TaskStatus.CANCELLED, timeout_s=5)
        took = time.monotonic() - asked

    assert took < 2.0, took
    [step] = app.store.get_steps(task_id)
    assert (step.kind, step.status, step.error) == ("llm", StepStatus.FAILED, "cancelled")
    [run] = app.store.get_runs(task_id)
    assert run.status == RunStatus.CANCELLED


def test_remove_job_interrupts_a_long_tool_which_is_told(
    app: Harness, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    progress = tmp_path / "export.txt"
    server.enqueue(openai_tool_calls(("slow_export", {"path": str(progress), "seconds": 30})))
    agent = app.agent(provider="openai", model="gpt-4o-mini", allowed_tools=("slow_export",))
    task_id = app.task(agent, title="Export the orders")
    app.queue.add_task(task_id)
    with app.worker(threads=1):
        wait_until(lambda: lines(progress) == ["started"], what="the tool to start")
        asked = time.monotonic()
        app.queue.remove_job(task_id)
        wait_for(app, task_id, TaskStatus.CANCELLED, timeout_s=5)
        took = time.monotonic() - asked
        wait_until(lambda: lines(progress) == ["started", "stopped"], timeout_s=5, what="the tool to stop")

    assert took < 2.0, took
    llm, tool = app.store.get_steps(task_id)
    assert (llm.status, tool.status, tool.error) == (StepStatus.COMPLETED, StepStatus.FAILED, "cancelled")
    assert len(server.requests) == 1


def test_a_cancel_request_lost_by_redis_still_stops_the_run_at_its_next_step(
    app: Harness, server: FakeOpenAIServer, postgres_url: str
) -> None:
    """Without the Redis key (only the database flag) the run stops before its next call."""
    server.enqueue(FakeReply(openai_tool_calls(("calculate", {"expression": "1+1"})).body, delay_s=1.5))
    agent = app.agent(provider="openai", model="gpt-4o-mini", allowed_tools=("calculate",))
    task_id = app.task(agent, title="Add")
    app.queue.add_task(task_id)
    with app.worker(threads=1):
        wait_until(lambda: len(server.requests) == 1, what="the model call")
        assert app.store.request_cancel(task_id, now=utcnow()) is not None  # the database flag alone
        wait_for(app, task_id, TaskStatus.CANCELLED, timeout_s=10)
    steps = app.store.get_steps(task_id)
    assert [step.status for step in steps] == [StepStatus.COMPLETED] and len(server.requests) == 1


def test_a_cancel_request_stops_only_the_run_it_was_made_for(app: Harness) -> None:
    """An old request (its run ended, the task was retried since) never stops a later attempt."""
    from dramatiq.brokers.redis import RedisBroker

    from middleware.attempts import AttemptRegistry
    from middleware.cancel_watch import CancelWatch, signal_cancel

    broker = app.broker
    assert isinstance(broker, RedisBroker)
    task_id = app.task()
    app.queue.add_task(task_id, delay_ms=60_000)
    claim = app.store.claim(
        task_id, run_id=new_id(), worker_id="w", lease_until=utcnow() + timedelta(minutes=1), now=utcnow()
    )
    assert claim is not None
    registry = AttemptRegistry()
    attempt = registry.add("message-1", claim)
    watch = CancelWatch(registry)

    assert signal_cancel(broker, task_id, new_id())  # a request for an earlier run of the task
    assert watch.check(broker) == [] and not attempt.cancel.is_set()

    assert signal_cancel(broker, task_id, claim.run_id)
    assert watch.check(broker) == [attempt] and attempt.cancel.is_set()
    assert attempt.cancel.reason == "cancel requested"
    assert watch.check(broker) == []  # signalled once


def test_followers_see_the_wait_and_the_decision_live_and_in_replay(
    app: Harness, server: FakeOpenAIServer, tmp_path: Path, redis_url: str
) -> None:
    refunds = tmp_path / "refunds.txt"
    approved_id, rejected_id = refund_task(app), refund_task(app)

    with app.worker(threads=1):
        for task_id in (approved_id, rejected_id):
            server.enqueue(refund_reply(refunds))
            app.queue.add_task(task_id)
            wait_for(app, task_id, TaskStatus.AWAITING_APPROVAL)
        server.enqueue(openai_text("Refunded 30."))
        app.queue.approve(approved_id, note="fine", decided_by="ana")
        wait_for(app, approved_id, TaskStatus.COMPLETED)
        server.enqueue(openai_text("No."))
        app.queue.reject(rejected_id, "duplicate", decided_by="bo")
        wait_for(app, rejected_id, TaskStatus.COMPLETED)

    def types(task_id: str) -> list[str]:
        return [event.type for event in app.queue.events(task_id, follow=False)]

    live = types(approved_id)
    waited = live.index("approval_requested")
    assert live[waited : waited + 4] == ["approval_requested", "approved", "queued", "running"]
    assert live[waited + 4 :] == [
        "tool_started",
        "tool_completed",
        "llm_started",
        "llm_completed",
        "completed",
    ]
    decision = next(
        event for event in app.queue.events(approved_id, follow=False) if event.type == "approved"
    )
    assert decision.data["decided_by"] == "ana"
    rejected = types(rejected_id)
    assert rejected[rejected.index("approval_requested") :][:3] == [
        "approval_requested",
        "rejected",
        "queued",
    ]
    assert "tool_started" not in rejected

    redis_client = redis.Redis.from_url(redis_url)
    for task_id in (approved_id, rejected_id):  # the streams expire: the ledger tells the same story
        redis_client.delete(stream_key(task_id))
    replayed = types(approved_id)
    assert replayed[replayed.index("approval_requested") :][:4] == [
        "approval_requested",
        "approved",
        "tool_started",
        "tool_completed",
    ]
    replayed = types(rejected_id)
    assert replayed[replayed.index("approval_requested") :][:2] == ["approval_requested", "rejected"]
    assert "tool_started" not in replayed
