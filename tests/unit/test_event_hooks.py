"""EventHooks: what the agent loop's steps publish, and how streamed text is gathered."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from actors.events import EventHooks, describe, event_line
from actors.events.model import Event
from middleware.events import EventType
from orchestrator import AgentSpec, Orchestrator, ProviderRegistry, TaskInput
from orchestrator.messages import ChatMessage, ModelRequest, ModelResponse, ToolCall, Usage


class Recorder:
    """An EventSink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, EventType, dict[str, Any]]] = []

    def publish(self, task_id: str, type: EventType, data: Mapping[str, Any] | None = None) -> None:
        self.events.append((task_id, type, dict(data or {})))

    def publish_many(self, events: Sequence[tuple[str, EventType, Mapping[str, Any]]]) -> None:
        for task_id, type, data in events:
            self.publish(task_id, type, data)

    def flush(self, timeout_s: float = 1.0) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


AGENT = AgentSpec(id="a", name="agent", provider="scripted", model="scripted-1", allowed_tools=("calculate",))
TASK = TaskInput(id="00000000-0000-4000-8000-000000000001", title="Add up")


def request(*messages: ChatMessage) -> ModelRequest:
    return ModelRequest(
        model="gpt-4o-mini",
        system_prompt=None,
        messages=messages,
        tools=(),
        temperature=None,
        max_tokens=None,
    )


def test_a_real_run_publishes_its_model_and_tool_steps_for_its_task() -> None:
    sink = Recorder()
    orchestrator = Orchestrator(ProviderRegistry(), hooks=EventHooks(sink))
    task = TaskInput(
        id=TASK.id,
        title="Add up",
        context={"script": [{"tool": "calculate", "arguments": {"expression": "2+3"}}, {"answer": "5"}]},
    )

    orchestrator.run(AGENT, task)

    assert {task_id for task_id, _, _ in sink.events} == {TASK.id}
    assert [type for _, type, _ in sink.events] == [
        EventType.LLM_STARTED,
        EventType.LLM_COMPLETED,
        EventType.TOOL_STARTED,
        EventType.TOOL_COMPLETED,
        EventType.LLM_STARTED,
        EventType.LLM_COMPLETED,
    ]
    tool_done = sink.events[3][2]
    assert (
        tool_done["result"] == "5" and tool_done["is_error"] is False and tool_done["call_id"] == "call_0_0"
    )


def test_streamed_text_is_published_at_once_after_a_quiet_spell_and_gathered_in_a_burst() -> None:
    sink, clock = Recorder(), Clock()
    hooks = EventHooks(sink, delta_flush_ms=100, clock=clock)
    hooks.on_run_start(AGENT, TASK)
    hooks.on_llm_start(request(ChatMessage(role="user", content="hi")), provider="openai")

    hooks.on_llm_delta("Hel", provider="openai")  # first piece: at once
    clock.now += 0.01
    hooks.on_llm_delta("lo, ", provider="openai")  # within 100 ms: gathered
    clock.now += 0.01
    hooks.on_llm_delta("wor", provider="openai")
    clock.now += 0.2
    hooks.on_llm_delta("ld", provider="openai")  # 100 ms since the last event: out with the gathered text
    hooks.on_llm_delta("!", provider="openai")
    hooks.on_llm_end(request(), _response("Hello, world!"), None, provider="openai")

    deltas = [data["text"] for _, type, data in sink.events if type == EventType.LLM_DELTA]
    assert deltas == ["Hel", "lo, world", "!"]  # the last piece goes out before llm_completed
    assert sink.events[-1][1] == EventType.LLM_COMPLETED
    assert sink.events[-1][2]["latency_ms"] == 220


def test_no_step_is_published_outside_a_run_and_a_failed_call_says_why() -> None:
    sink = Recorder()
    hooks = EventHooks(sink)
    hooks.on_llm_start(request(), provider="openai")  # no run started in this thread
    hooks.on_tool_start(ToolCall("c1", "calculate", {}))
    assert sink.events == []

    hooks.on_run_start(AGENT, TASK)
    hooks.on_llm_start(request(), provider="openai")
    hooks.on_llm_end(
        request(), None, TimeoutError("no answer with key sk-abcdefghijklmnopqrst"), provider="openai"
    )
    hooks.on_tool_start(ToolCall("c1", "calculate", {}))
    hooks.on_tool_end(ToolCall("c1", "calculate", {}), None, TimeoutError("tool took too long"))
    hooks.on_run_end(None, TimeoutError())
    hooks.on_llm_start(request(), provider="openai")  # the run ended

    llm_done, tool_done = sink.events[1][2], sink.events[3][2]
    assert llm_done["error"] == "TimeoutError: no answer with key [Filtered]"
    assert tool_done["is_error"] is True and tool_done["error"] == "TimeoutError: tool took too long"
    assert len(sink.events) == 4


def test_only_the_messages_since_the_model_last_spoke_are_the_prompt() -> None:
    sink = Recorder()
    hooks = EventHooks(sink)
    hooks.on_run_start(AGENT, TASK)
    call = ToolCall("c1", "calculate", {"expression": "1"})
    conversation = (
        ChatMessage(role="user", content="task"),
        ChatMessage(role="assistant", content="", tool_calls=(call,)),
        ChatMessage(role="tool", content="1", tool_call_id="c1"),
    )

    hooks.on_llm_start(request(*conversation), provider="openai")

    data = sink.events[0][2]
    assert data["messages"] == 3 and data["prompt"] == [
        {"role": "tool", "content": "1", "tool_call_id": "c1"}
    ]


def test_each_event_reads_as_one_line() -> None:
    def line(type: str, **data: Any) -> str:
        return describe(Event("1-0", type, TASK.id, "2026-12-01T10:00:00+00:00", data))

    assert (
        line("queued", priority=7, delay_ms=1500, by="add_task") == "priority 7, delay 1500 ms, by add_task"
    )
    assert line(
        "llm_completed",
        model="gpt-4o-mini",
        input_tokens=10,
        output_tokens=5,
        cost_usd="0.0000045",
        latency_ms=230,
    ) == ("gpt-4o-mini: 10 in / 5 out tokens, $0.0000045, 230 ms")
    assert line("llm_delta", chars=5, text="Hello") == "'Hello'"
    assert line("llm_delta", chars=5) == "5 characters"
    assert line("tool_completed", name="calculate", result="5", latency_ms=1) == "calculate -> 5 (1 ms)"
    assert line("retrying", attempt=1, error="boom", delay_ms=2000) == (
        "attempt 1 failed: boom; next attempt in 2000 ms"
    )
    assert line("failed", error="x" * 500).endswith("…")
    assert line("completed", output="done", replayed=True) == "done (replayed)"
    assert line("something_new", a=1) == '{"a": 1}'
    event = Event("1733000000000-0", "cancelled", TASK.id, "2026-12-01T10:00:00+00:00", {})
    assert event_line(event) == "2026-12-01T10:00:00+00:00  1733000000000-0   cancelled"


def _response(text: str) -> ModelResponse:
    return ModelResponse(
        content=text,
        tool_calls=(),
        usage=Usage(input_tokens=3, output_tokens=4),
        model="m",
        finish_reason="stop",
    )
