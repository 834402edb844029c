"""Durable runs through the whole pipeline: an attempt that ends part way (a provider error, a 429, a failure
retried by hand, a worker that died inside a tool) is resumed after its completed steps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from middleware.metrics import REGISTRY
from middleware.task_lifecycle import send_queued
from orchestrator import ModelResponse, ToolCall, Usage
from orchestrator.ledger import model_input, model_output, tool_input
from taskstore import (
    InMemoryTaskStore,
    RunStatus,
    StepKind,
    StepStatus,
    TaskStatus,
    TaskStore,
    new_id,
    utcnow,
)
from taskstore.postgres import PostgresTaskStore
from tests.fakes.openai_server import FakeOpenAIServer, openai_error, openai_text, openai_tool_calls
from tests.fakes.tools import lines
from tests.harness import Harness, redis_harness, stub_harness, wait_until

TOOLS = ("tests.fakes.tools:tools",)
FINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


def status(app: Harness, task_id: str) -> TaskStatus:
    task = app.store.get_task(task_id)
    assert task is not None
    return task.status


def metric(name: str, **labels: str) -> float:
    """A sample of this process's Prometheus registry (0 before its first increment)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def steps_of(store: TaskStore, task_id: str) -> list[tuple[int, StepKind, StepStatus]]:
    return [(step.seq, step.kind, step.status) for step in store.get_steps(task_id)]


# --- a provider that fails part way (OpenAI SDK over HTTP, Postgres, Redis) ------------------------------


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


def billing_task(app: Harness, **fields: Any) -> str:
    agent = app.agent(provider="openai", model="gpt-4o-mini", allowed_tools=("append_line",))
    return app.task(agent, title="Bill the customer", **fields)


def run_to_end(app: Harness, task_id: str) -> None:
    with app.worker(threads=2):
        wait_until(lambda: status(app, task_id) in FINAL, what="the task to end")


def first_calls(server: FakeOpenAIServer) -> int:
    """Requests that are the run's first model call (the conversation is the task alone)."""
    return sum(1 for request in server.requests if len(request.body["messages"]) == 1)


@pytest.mark.integration
def test_a_retry_after_a_server_error_goes_on_after_the_completed_steps(
    app: Harness, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    invoices = tmp_path / "invoices.txt"
    server.enqueue(
        openai_tool_calls(("append_line", {"path": str(invoices), "text": "invoice"})),
        openai_error(503, "overloaded"),
        openai_text("Invoice sent."),
    )
    task_id = billing_task(app)
    resumed = metric("agentq_runs_resumed_total", queue="general")
    replayed = {
        kind: metric("agentq_steps_replayed_total", queue="general", kind=kind) for kind in ("llm", "tool")
    }
    app.queue.add_task(task_id)

    run_to_end(app, task_id)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.COMPLETED, job and job.failed_reason
    assert job.result is not None and (job.result["output"], job.result["turns"]) == ("Invoice sent.", 2)
    assert len(server.requests) == 3 and first_calls(server) == 1
    assert lines(invoices) == [f"invoice {task_id}:0:1"]
    assert steps_of(app.store, task_id) == [
        (0, StepKind.LLM, StepStatus.COMPLETED),
        (1, StepKind.TOOL, StepStatus.COMPLETED),
        (2, StepKind.LLM, StepStatus.COMPLETED),
    ]
    failed, completed = job.runs
    assert (failed.status, completed.status) == (RunStatus.FAILED, RunStatus.COMPLETED)
    # each model call counted once: the first by the failed run, the last by the resumed one
    assert (failed.input_tokens, completed.input_tokens, job.task.input_tokens) == (10, 10, 20)
    assert [entry.get("replayed", False) for entry in completed.transcript or []] == [True, True, False]
    assert metric("agentq_runs_resumed_total", queue="general") == resumed + 1
    assert {kind: metric("agentq_steps_replayed_total", queue="general", kind=kind) for kind in replayed} == {
        kind: count + 1 for kind, count in replayed.items()
    }


@pytest.mark.integration
def test_a_run_postponed_by_a_rate_limit_resumes_where_it_stopped(
    app: Harness, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    invoices = tmp_path / "invoices.txt"
    server.enqueue(
        openai_tool_calls(("append_line", {"path": str(invoices), "text": "invoice"})),
        openai_error(429, "Rate limit reached", type="rate_limit_error", headers={"retry-after-ms": "50"}),
        openai_text("Invoice sent."),
    )
    task_id = billing_task(app)
    app.queue.add_task(task_id)

    run_to_end(app, task_id)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.COMPLETED and job.attempts_made == 1
    assert [run.status for run in job.runs] == [RunStatus.POSTPONED, RunStatus.COMPLETED]
    assert len(server.requests) == 3 and first_calls(server) == 1 and len(lines(invoices)) == 1


@pytest.mark.integration
def test_retry_job_resumes_a_failed_firing_only_when_asked(
    app: Harness, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    invoices = tmp_path / "invoices.txt"
    call = openai_tool_calls(("append_line", {"path": str(invoices), "text": "invoice"}))
    server.enqueue(call, openai_error(400, "bad request", type="invalid_request_error"))
    task_id = billing_task(app)
    app.queue.add_task(task_id)
    run_to_end(app, task_id)
    assert status(app, task_id) == TaskStatus.FAILED and len(lines(invoices)) == 1

    # resume=True: the same firing goes on after its completed steps
    server.enqueue(openai_error(400, "still bad", type="invalid_request_error"))
    app.queue.retry_job(task_id, resume=True)
    run_to_end(app, task_id)
    assert len(server.requests) == 3 and first_calls(server) == 1 and len(lines(invoices)) == 1
    assert [step.firing for step in app.store.get_steps(task_id)] == [0, 0, 0]

    # the default: a fresh firing, from the first step
    server.enqueue(call, openai_text("Invoice sent."))
    app.queue.retry_job(task_id)
    run_to_end(app, task_id)
    task = app.store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.COMPLETED and task.firing == 1
    assert first_calls(server) == 2 and lines(invoices)[-1] == f"invoice {task_id}:1:1"
    assert {step.firing for step in app.store.get_steps(task_id)} == {1}


# --- a worker that died inside a tool (in memory, as the store's rows show it) ---------------------------


def killed_inside_tool(store: TaskStore, task_id: str, tool: str, arguments: dict[str, Any]) -> None:
    """Leave the rows a worker SIGKILLed inside ``tool`` leaves: model call completed, tool call started,
    the lease expired and recovered (the scripted provider's first answer, call id ``call_0_0``)."""
    now = utcnow()
    assert store.mark_queued(task_id, priority=None, run_at=now, now=now) is not None
    claim = store.claim(task_id, run_id=new_id(), worker_id="dead", lease_until=now, now=now)
    assert claim is not None
    call = ToolCall("call_0_0", tool, arguments)
    response = ModelResponse(
        None, (call,), Usage(input_tokens=12, output_tokens=3), "scripted-1", "tool_calls"
    )
    step: dict[str, Any] = {"firing": 0, "now": now}
    assert store.start_step(
        task_id,
        claim.run_id,
        seq=0,
        kind=StepKind.LLM,
        name="scripted-1",
        input=model_input(1, "scripted", "scripted-1"),
        replaces=None,
        **step,
    )
    assert store.finish_step(
        task_id,
        claim.run_id,
        seq=0,
        status=StepStatus.COMPLETED,
        output=model_output("scripted", response, None),
        input_tokens=12,
        **step,
    )
    assert store.start_step(
        task_id,
        claim.run_id,
        seq=1,
        kind=StepKind.TOOL,
        name=tool,
        input=tool_input(1, call, f"{task_id}:0:1"),
        replaces=None,
        **step,
    )
    [stalled] = store.recover_stalled(max_stalled_count=1, now=utcnow())
    assert stalled.requeued


def resume(
    tool: str, tmp_path: Path, edit: dict[str, Any] | None = None, **settings: Any
) -> tuple[Harness, str, Path]:
    """Run the task of a worker that died inside ``tool`` on a fresh worker (its tool step's row first
    overwritten with ``edit``, as someone editing the database would); returns the app, task, file."""
    invoices = tmp_path / "invoices.txt"
    arguments = {"path": str(invoices), "text": "invoice"}
    store = InMemoryTaskStore()
    with stub_harness(store, tools=TOOLS, **settings) as app:
        agent = app.agent(allowed_tools=(tool,))
        script = [{"tool": tool, "arguments": arguments}, {"answer": "ok"}]
        task_id = app.task(agent, context={"script": script})
        killed_inside_tool(store, task_id, tool, arguments)
        if edit:
            store.update_row("ai_agent_task_steps", store.get_steps(task_id)[1].id, **edit)
        send_queued(app.broker, "general", task_id)
        with app.worker() as worker:
            app.drain(worker)
        return app, task_id, invoices


def test_a_non_idempotent_tool_left_started_is_not_repeated_and_the_task_fails(tmp_path: Path) -> None:
    app, task_id, invoices = resume("append_line", tmp_path)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.FAILED and job.attempts_made == 1
    assert job.failed_reason is not None
    assert "tool 'append_line' may already have run; not repeated" in job.failed_reason
    assert lines(invoices) == []  # the crafted first attempt wrote nothing; the second did not run it
    assert steps_of(app.store, task_id) == [
        (0, StepKind.LLM, StepStatus.COMPLETED),
        (1, StepKind.TOOL, StepStatus.STARTED),
    ]
    # the killed run's completed model call is billed to it, once
    stalled = job.runs[0]
    assert (stalled.status, stalled.input_tokens, job.task.input_tokens) == (RunStatus.STALLED, 12, 12)


@pytest.mark.parametrize(
    ("tool", "settings"),
    [("append_line_idempotent", {}), ("append_line", {"repeat_unfinished_tools": True})],
    ids=["idempotent", "repeat-setting"],
)
def test_an_unfinished_tool_runs_again_when_idempotent_or_allowed(
    tool: str, settings: dict[str, Any], tmp_path: Path
) -> None:
    app, task_id, invoices = resume(tool, tmp_path, **settings)

    task = app.store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.COMPLETED, task.error if task else None
    assert lines(invoices) == [f"invoice {task_id}:0:1"]  # the same idempotency key as the first attempt's
    assert [status for _, _, status in steps_of(app.store, task_id)] == [StepStatus.COMPLETED] * 3


def test_without_the_ledger_nothing_is_recorded_and_a_retry_starts_over(tmp_path: Path) -> None:
    invoices = tmp_path / "invoices.txt"
    script = [
        {"tool": "append_line", "arguments": {"path": str(invoices), "text": "invoice"}},
        {"answer": "done"},
    ]
    with stub_harness(InMemoryTaskStore(), tools=TOOLS, step_ledger=False) as app:
        task_id = app.task(app.agent(allowed_tools=("append_line",)), context={"script": script})
        app.queue.add_task(task_id)
        with app.worker() as worker:
            app.drain(worker)

        assert status(app, task_id) == TaskStatus.COMPLETED
        assert app.store.get_steps(task_id) == []
        assert lines(invoices) == [f"invoice {task_id}:0:1"]  # the key is still the task's firing and step


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            {"name": "refund"},
            "step 1 of the step ledger does not match this run: tool 'refund' where the model",
        ),
        ({"kind": "llm"}, "step 1 of the step ledger does not match this run: a 'llm' step where tool call"),
        ({"seq": 7}, "step 7 of the step ledger does not match this run: expected step 1 here"),
    ],
    ids=["tool-name", "kind", "seq"],
)
def test_an_edited_ledger_fails_the_run_before_any_call(
    edit: dict[str, Any], problem: str, tmp_path: Path
) -> None:
    app, task_id, invoices = resume("append_line_idempotent", tmp_path, edit=edit)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.FAILED and job.attempts_made == 1
    assert job.failed_reason is not None and problem in job.failed_reason
    assert lines(invoices) == []
    assert job.runs[-1].input_tokens == 0  # no model call was made
