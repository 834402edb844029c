"""Trace context through the StubBroker: producer span → consumer span → agent spans, retries included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from actors.runtime import build_runtime
from middleware import build_middleware
from middleware.batches import enqueue_batch
from middleware.task_lifecycle import QUEUED_OPTION
from middleware.tracing import TRACE_OPTION, abandon_publish
from orchestrator.tracing import TracingHooks
from taskstore import InMemoryTaskStore, TaskStatus, new_id
from tests.harness import ORG, Harness, declare_kinds, harness_settings


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(spans: InMemorySpanExporter) -> Iterator[tuple[Harness, TracerProvider]]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    config = harness_settings()
    store = InMemoryTaskStore()
    broker = StubBroker(middleware=build_middleware(config, store, tracer_provider=provider))
    broker.emit_after("process_boot")
    runtime = build_runtime(config, store=store, broker=broker)
    runtime.orchestrator().hooks = TracingHooks(tracer_provider=provider)
    try:
        yield Harness(runtime, declare_kinds(runtime)), provider
    finally:
        broker.close()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


SCRIPT: list[dict[str, Any]] = [{"tool": "calculate", "arguments": {"expression": "6*7"}}, {"answer": "42"}]


def test_one_trace_runs_from_add_task_to_the_model_and_tool_calls(
    traced: tuple[Harness, TracerProvider], spans: InMemorySpanExporter
) -> None:
    # Given a task whose scripted agent calls a tool, then answers
    harness, _ = traced
    task_id = harness.task(context={"script": SCRIPT})

    # When it is added from the producer and a worker runs it
    harness.queue.add_task(task_id)
    with harness.worker() as worker:
        harness.drain(worker)

    # Then every span shares one trace, parented publish → process → invoke_agent → chat / execute_tool
    finished = spans.get_finished_spans()
    [publish] = by_name(finished, "general publish")
    [process] = by_name(finished, "general process")
    [agent] = by_name(finished, "invoke_agent Test agent")
    chats = by_name(finished, "chat scripted-model") or [s for s in finished if s.name.startswith("chat ")]
    [tool] = by_name(finished, "execute_tool calculate")
    assert {span.context.trace_id for span in finished} == {publish.context.trace_id}
    assert publish.kind is SpanKind.PRODUCER and publish.parent is None
    assert process.kind is SpanKind.CONSUMER and parent_of(process) == publish.context.span_id
    assert parent_of(agent) == process.context.span_id
    assert len(chats) == 2 and all(parent_of(chat) == agent.context.span_id for chat in chats)
    assert parent_of(tool) == agent.context.span_id
    # And the spans carry the messaging, task and GenAI attributes
    assert process.attributes is not None and publish.attributes is not None
    assert publish.attributes["agentq.task_id"] == task_id
    assert process.attributes["messaging.system"] == "dramatiq"
    assert process.attributes["messaging.destination.name"] == "general"
    assert process.attributes["agentq.organization_id"] == ORG
    assert process.attributes["agentq.attempt"] == 1
    assert process.attributes["agentq.outcome"] == "completed"
    assert chats[0].attributes is not None and chats[0].attributes["gen_ai.operation.name"] == "chat"
    assert chats[0].attributes["gen_ai.provider.name"] == "scripted"
    assert isinstance(chats[0].attributes["gen_ai.usage.input_tokens"], int)
    assert tool.attributes is not None and tool.attributes["gen_ai.tool.name"] == "calculate"
    assert tool.attributes["gen_ai.tool.call.id"] == "call_0_0"
    # And no prompt content is recorded by default
    assert not any("gen_ai.input.messages" in (span.attributes or {}) for span in finished)
    assert harness.store.get_task(task_id).status == TaskStatus.COMPLETED  # type: ignore[union-attr]


def test_retries_stay_in_the_trace_each_attempt_parented_by_the_retry_publish(
    traced: tuple[Harness, TracerProvider], spans: InMemorySpanExporter
) -> None:
    # Given a kind that fails every attempt (3 attempts)
    harness, _ = traced
    task_id = harness.task(agent_id=harness.agent(kind="crashing"))

    harness.queue.add_task(task_id)
    with harness.worker() as worker:
        harness.drain(worker)

    # Then the three attempts are one chain: publish → process → publish → process → publish → process
    finished = spans.get_finished_spans()
    publishes = by_name(finished, "crashing publish")
    processes = sorted(by_name(finished, "crashing process"), key=lambda s: s.start_time or 0)
    assert len(publishes) == 3 and len(processes) == 3
    assert len({span.context.trace_id for span in finished}) == 1
    for attempt, process in enumerate(processes, start=1):
        assert process.attributes is not None and process.attributes["agentq.attempt"] == attempt
        assert process.status.status_code is StatusCode.ERROR
        assert any(event.name == "exception" for event in process.events)
        [publish] = [p for p in publishes if p.context.span_id == parent_of(process)]
        if attempt > 1:
            assert parent_of(publish) == processes[attempt - 2].context.span_id
    assert [p.attributes["agentq.outcome"] for p in processes if p.attributes] == [
        "retried",
        "retried",
        "failed",
    ]


def test_skipped_messages_end_their_span_and_detach(
    traced: tuple[Harness, TracerProvider], spans: InMemorySpanExporter
) -> None:
    # Given a message for a task that is already running elsewhere (not queued): it is skipped
    harness, _ = traced
    task_id = harness.task()
    harness.queue.add_task(task_id)
    harness.kinds["general"].send_with_options(args=(task_id,), agentq_queued=True)

    with harness.worker(threads=1) as worker:
        harness.drain(worker)

    processes = by_name(spans.get_finished_spans(), "general process")
    assert len(processes) == 2
    assert [p.attributes.get("agentq.skipped") for p in processes if p.attributes].count(True) == 1
    assert not trace.get_current_span().get_span_context().is_valid


def test_a_delayed_message_moved_back_keeps_its_context_and_gets_no_new_span(
    traced: tuple[Harness, TracerProvider], spans: InMemorySpanExporter
) -> None:
    harness, _ = traced
    task_id = harness.task()
    harness.queue.add_task(task_id)
    [message] = [harness.broker.queues["general"].get_nowait()]
    from dramatiq import Message

    decoded = Message.decode(message)
    carrier = dict(decoded.options[TRACE_OPTION])

    # When a consumer thread (no span current) re-enqueues it, as a .DQ move does
    harness.broker.enqueue(decoded)

    assert decoded.options[TRACE_OPTION] == carrier
    assert len(by_name(spans.get_finished_spans(), "general publish")) == 1


#: Options of a message for a task already marked queued (what ``add_tasks`` sends).
QUEUED: dict[str, Any] = {QUEUED_OPTION: True}


def test_a_batch_keeps_one_publish_span_per_message_open_until_it_has_landed(
    traced: tuple[Harness, TracerProvider], spans: InMemorySpanExporter
) -> None:
    # Given three messages sent as one batch (their before_enqueue hooks all run before any after_enqueue)
    harness, _ = traced
    actor = harness.kinds["general"]
    batch = [actor.message_with_options(args=(new_id(),), **QUEUED) for _ in range(3)]
    with enqueue_batch():
        for message in batch:
            harness.broker.emit_before("enqueue", message, None)

    # When they have landed
    for message in batch:
        harness.broker.emit_after("enqueue", message, None)

    # Then each has its own publish span, ended without error
    publishes = by_name(spans.get_finished_spans(), "general publish")
    assert len(publishes) == 3
    assert {span.status.status_code for span in publishes} == {StatusCode.UNSET}
    assert {dict(span.attributes or {})["messaging.message.id"] for span in publishes} == {
        message.message_id for message in batch
    }


def test_a_batch_that_failed_ends_every_open_span_with_the_error(
    traced: tuple[Harness, TracerProvider], spans: InMemorySpanExporter
) -> None:
    harness, _ = traced
    actor = harness.kinds["general"]
    stale = actor.message_with_options(args=(new_id(),), **QUEUED)
    harness.broker.emit_before("enqueue", stale, None)  # a single enqueue that never completed
    batch = [actor.message_with_options(args=(new_id(),), **QUEUED) for _ in range(2)]
    with enqueue_batch():
        for message in batch:
            harness.broker.emit_before("enqueue", message, None)
    assert [span.status.status_code for span in spans.get_finished_spans()] == [StatusCode.ERROR]

    abandon_publish(ConnectionError("Redis is down"))

    publishes = by_name(spans.get_finished_spans(), "general publish")
    assert len(publishes) == 3
    assert {span.status.status_code for span in publishes} == {StatusCode.ERROR}
    assert "Redis is down" in (publishes[-1].status.description or "")
