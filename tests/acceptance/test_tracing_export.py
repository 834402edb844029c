"""One trace from a producer's add_task through a real `dramatiq actors` to the model and tool calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskstore import NewAgent, NewTask, TaskStatus, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import WorkerProcess, command_env
from tests.fakes.openai_server import FakeOpenAIServer, openai_error, openai_text, openai_tool_calls
from tests.fakes.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.harness import ORG, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]

PRODUCER, CONSUMER, CLIENT = 4, 5, 3  # OTLP SpanKind numbers


def named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name == name]


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [span for span in spans if span.parent_span_id == parent.span_id]


def test_one_trace_from_add_task_to_chat_and_execute_tool_spans_across_a_retry(
    postgres_store: PostgresTaskStore, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Given a tool-calling OpenAI agent whose first attempt ends in a 500 after one tool call
    with FakeOpenAIServer() as openai, OTLPReceiver() as receiver:
        openai.enqueue(
            openai_tool_calls(("calculate", {"expression": "2 * 21"})),
            openai_error(500, "upstream overloaded"),
            openai_tool_calls(("calculate", {"expression": "2 * 21"})),
            openai_text("The answer is 42."),
        )
        env = command_env(
            DATABASE_URL=postgres_url,
            REDIS_URL=redis_url,
            OPENAI_API_KEY="sk-test-key",
            OPENAI_BASE_URL=openai.base_url,
            AGENTQ_BACKOFF_MS="100",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        now = utcnow()
        agent = postgres_store.create_agent(
            NewAgent(
                organization_id=ORG,
                name="analyst",
                provider="openai",
                model="gpt-4o-mini",
                allowed_tools=("calculate",),
            ),
            now=now,
        )
        task = postgres_store.create_task(
            NewTask(agent_id=agent.id, organization_id=ORG, title="Add"), now=now
        )
        worker = WorkerProcess(dict(env, OTEL_SERVICE_NAME="agentq-worker"), tmp_path / "worker.log")
        try:
            # When another process enqueues it with add_task
            producer = WorkerProcess.run_python(
                dict(env, OTEL_SERVICE_NAME="agentq-producer"),
                f"from actors import agent_task_queue; agent_task_queue.add_task({task.id!r})",
            )
            assert producer.returncode == 0, producer.stderr
            wait_until(
                lambda: postgres_store.get_task(task.id).status == TaskStatus.COMPLETED,  # type: ignore[union-attr]
                timeout_s=60,
                what="the task to complete on its second attempt",
            )
            # Each attempt's consumer span ends (and is exported) after its invoke_agent span.
            receiver.wait_for(
                lambda spans: (
                    len(named(spans, "invoke_agent analyst")) == 2
                    and len(named(spans, "general process")) == 2
                )
            )
        finally:
            worker.close()
        spans = receiver.spans()

    # Then every span of the task is in one trace, the producer's
    [first_publish] = [s for s in named(spans, "general publish") if s.service_name == "agentq-producer"]
    assert first_publish.service_name == "agentq-producer" and first_publish.kind == PRODUCER
    assert first_publish.attributes["agentq.task_id"] == task.id
    trace_spans = [s for s in spans if s.trace_id == first_publish.trace_id]
    assert {s.name for s in spans if s.attributes.get("agentq.task_id") == task.id} <= {
        s.name for s in trace_spans
    }

    # And the tree is publish → process → invoke_agent → chat/execute_tool, then publish (retry) → process …
    [attempt1] = children(trace_spans, first_publish)
    assert attempt1.name == "general process" and attempt1.kind == CONSUMER
    assert attempt1.service_name == "agentq-worker"
    assert attempt1.attributes["agentq.attempt"] == 1 and attempt1.attributes["agentq.outcome"] == "retried"
    assert attempt1.attributes["agentq.organization_id"] == ORG
    assert attempt1.attributes["messaging.message.id"]
    [run1] = named(children(trace_spans, attempt1), "invoke_agent analyst")
    assert [s.name for s in children(trace_spans, run1)] == [
        "chat gpt-4o-mini",
        "execute_tool calculate",
        "chat gpt-4o-mini",
    ]
    assert run1.status_code == 2 and "exception" in run1.events  # STATUS_CODE_ERROR
    [retry_publish] = named(children(trace_spans, attempt1), "general publish")
    [attempt2] = children(trace_spans, retry_publish)
    assert attempt2.attributes["agentq.attempt"] == 2 and attempt2.attributes["agentq.outcome"] == "completed"
    [run2] = named(children(trace_spans, attempt2), "invoke_agent analyst")
    chat, tool, answer = children(trace_spans, run2)
    assert (chat.name, tool.name, answer.name) == (
        "chat gpt-4o-mini",
        "execute_tool calculate",
        "chat gpt-4o-mini",
    )
    assert chat.kind == CLIENT and chat.attributes["gen_ai.provider.name"] == "openai"
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert answer.attributes["gen_ai.usage.input_tokens"] > 0
    assert tool.attributes["gen_ai.tool.name"] == "calculate" and tool.attributes["gen_ai.tool.call.id"]
    # And no prompt or API key went out in any span
    assert not any(
        "sk-test-key" in repr(s.attributes) or "gen_ai.input.messages" in s.attributes for s in spans
    )
