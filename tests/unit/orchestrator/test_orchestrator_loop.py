"""The agent loop: turns, tool calls, permissions, limits and the transcript."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator import (
    AgentSpec,
    InvalidAgentSpec,
    MaxTurnsExceeded,
    ModelRequest,
    ModelResponse,
    Orchestrator,
    ProviderError,
    ProviderRegistry,
    ScriptedProvider,
    ScriptError,
    TaskInput,
    UnknownProvider,
    Usage,
    default_registry,
)
from orchestrator.agent import MAX_TRANSCRIPT_CHARS, build_user_message


class SpyProvider:
    """Scripted provider that records every request it receives."""

    name = "spy"

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []
        self._inner = ScriptedProvider(sleep=lambda _seconds: None)

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        return self._inner.complete(request)


class SecretArgs(BaseModel):
    value: int


def make_orchestrator() -> tuple[Orchestrator, SpyProvider, list[int]]:
    spy = SpyProvider()
    calls: list[int] = []
    tools = default_registry()

    @tools.tool(name="secret", description="Has a side effect.", args=SecretArgs)
    def secret(args: SecretArgs) -> str:
        calls.append(args.value)
        return f"secret {args.value}"

    return Orchestrator(ProviderRegistry({"spy": lambda: spy}), tools), spy, calls


def agent(allowed: tuple[str, ...] = ("calculate", "get_current_time"), max_turns: int = 10) -> AgentSpec:
    return AgentSpec(
        id="agent-1",
        name="helper",
        provider="spy",
        model="scripted-1",
        system_prompt="You help.",
        allowed_tools=allowed,
        temperature=None,
        max_tokens=None,
        max_turns=max_turns,
    )


def task(script: list[Any] | None = None, **context: Any) -> TaskInput:
    if script is not None:
        context["script"] = script
    return TaskInput(id="task-1", title="Do maths", description="Add things up.", context=context)


def test_three_turn_run_uses_tool_twice_then_answers_with_summed_usage() -> None:
    orchestrator, spy, _ = make_orchestrator()
    script = [
        {"tool": "calculate", "arguments": {"expression": "2+3"}},
        {"tool": "calculate", "arguments": {"expression": "5*4"}},
        {"answer": "The result is 20"},
    ]

    result = orchestrator.run(agent(), task(script))

    assert result.output == "The result is 20"
    assert result.turns == 3
    assert result.model == "scripted-1"
    assert [entry["type"] for entry in result.transcript] == ["model", "tool", "model", "tool", "model"]
    tool_results = [entry["result"] for entry in result.transcript if entry["type"] == "tool"]
    assert tool_results == ["5", "20"]
    assert result.transcript[1]["call_id"] == "call_0_0"
    assert result.transcript[1]["arguments"] == {"expression": "2+3"}
    per_call = [entry["usage"] for entry in result.transcript if entry["type"] == "model"]
    assert result.usage == Usage(
        input_tokens=sum(u["input_tokens"] for u in per_call),
        output_tokens=sum(u["output_tokens"] for u in per_call),
    )
    assert len(spy.requests) == 3
    assert [m.role for m in spy.requests[2].messages] == ["user", "assistant", "tool", "assistant", "tool"]


def test_model_sees_only_allowed_tool_specs_and_the_system_prompt() -> None:
    orchestrator, spy, _ = make_orchestrator()

    orchestrator.run(agent(allowed=("calculate", "no_such_tool")), task([{"answer": "ok"}]))

    request = spy.requests[0]
    assert [spec.name for spec in request.tools] == ["calculate"]
    assert "expression" in request.tools[0].parameters["properties"]
    assert request.system_prompt == "You help."


def test_every_tool_call_of_one_turn_is_answered() -> None:
    orchestrator, spy, _ = make_orchestrator()
    script = [
        {
            "tools": [
                {"name": "calculate", "arguments": {"expression": "1+1"}},
                {"name": "get_current_time", "arguments": {"timezone": "UTC"}},
                {"name": "calculate", "arguments": {"expression": "2*3"}},
            ]
        },
        {"answer": "done"},
    ]

    result = orchestrator.run(agent(), task(script))

    tool_messages = [m for m in spy.requests[1].messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_messages] == ["call_0_0", "call_0_1", "call_0_2"]
    assert tool_messages[0].content == "2"
    assert tool_messages[2].content == "6"
    assert not any(m.is_error for m in tool_messages)
    assert result.turns == 2


def test_disallowed_tool_is_never_executed_and_the_model_is_told(caplog: pytest.LogCaptureFixture) -> None:
    orchestrator, spy, secret_calls = make_orchestrator()
    script = [{"tool": "secret", "arguments": {"value": 7}}, {"answer": "gave up"}]

    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        result = orchestrator.run(agent(allowed=("calculate",)), task(script))

    assert secret_calls == []
    tool_message = spy.requests[1].messages[-1]
    assert tool_message.role == "tool"
    assert tool_message.is_error
    assert tool_message.content == "tool 'secret' is not allowed for this agent"
    assert result.transcript[1]["is_error"] is True
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "orchestrator"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "helper" in message
    assert "task-1" in message
    assert "secret" in message


def test_allowed_tool_with_side_effect_runs_once() -> None:
    orchestrator, _, secret_calls = make_orchestrator()
    script = [{"tool": "secret", "arguments": {"value": 7}}, {"answer": "ok"}]

    result = orchestrator.run(agent(allowed=("secret",)), task(script))

    assert secret_calls == [7]
    assert result.transcript[1]["result"] == "secret 7"


def test_invalid_arguments_go_back_to_the_model_as_a_tool_error() -> None:
    orchestrator, spy, _ = make_orchestrator()
    script = [{"tool": "calculate", "arguments": {"expr": "1+1"}}, {"answer": "oops"}]

    result = orchestrator.run(agent(), task(script))

    tool_message = spy.requests[1].messages[-1]
    assert tool_message.is_error
    assert "expression" in tool_message.content
    assert "calculate" in tool_message.content
    assert result.output == "oops"


def test_allowed_but_unregistered_tool_goes_back_as_an_unknown_tool_error() -> None:
    orchestrator, spy, _ = make_orchestrator()
    script = [{"tool": "ghost", "arguments": {}}, {"answer": "ok"}]

    orchestrator.run(agent(allowed=("ghost",)), task(script))

    tool_message = spy.requests[1].messages[-1]
    assert tool_message.is_error
    assert "unknown tool 'ghost'" in tool_message.content


def test_running_out_of_turns_raises_max_turns_exceeded() -> None:
    orchestrator, _, _ = make_orchestrator()
    script = [{"tool": "calculate", "arguments": {"expression": "1"}}] * 5

    with pytest.raises(MaxTurnsExceeded, match="max_turns=3") as excinfo:
        orchestrator.run(agent(max_turns=3), task(script))

    assert excinfo.value.retryable is False


def test_scripted_failure_propagates_as_provider_error_with_its_retryable_flag() -> None:
    orchestrator, _, _ = make_orchestrator()
    script = [{"fail": "rate limited", "retryable": True, "retry_after_ms": 250}]

    with pytest.raises(ProviderError, match="rate limited") as excinfo:
        orchestrator.run(agent(), task(script))

    assert excinfo.value.retryable is True
    assert excinfo.value.retry_after_ms == 250


def test_malformed_script_raises_script_error_before_any_tool_runs() -> None:
    orchestrator, _, secret_calls = make_orchestrator()
    script = [{"tool": "secret", "arguments": {"value": 1}}, {"bogus": True}]

    with pytest.raises(ScriptError, match="step 1"):
        orchestrator.run(agent(allowed=("secret",)), task(script))

    assert secret_calls == []


def test_unknown_provider_raises_unknown_provider_naming_it() -> None:
    orchestrator = Orchestrator()
    spec = AgentSpec(id="a", name="n", provider="nope", model="m")

    with pytest.raises(UnknownProvider, match="'nope'"):
        orchestrator.run(spec, task())


def test_default_orchestrator_answers_offline_without_a_script() -> None:
    spec = AgentSpec(id="a", name="n", provider="scripted", model="scripted-1")

    result = Orchestrator().run(spec, TaskInput(id="t", title="Write a haiku"))

    assert result.output == "Completed: Write a haiku"
    assert result.turns == 1
    assert result.usage.input_tokens >= 1
    assert result.usage.output_tokens >= 1


def test_agent_spec_rejects_zero_max_turns() -> None:
    with pytest.raises(InvalidAgentSpec, match="max_turns"):
        agent(max_turns=0)


def test_user_message_renders_context_as_json_without_the_script() -> None:
    text = build_user_message(task([{"answer": "x"}], city="Paris"))

    assert text.splitlines()[0] == "Do maths"
    assert "Add things up." in text
    assert '"city": "Paris"' in text
    assert "script" not in text


def test_transcript_strings_are_clipped() -> None:
    orchestrator, _, _ = make_orchestrator()
    long_answer = "x" * (MAX_TRANSCRIPT_CHARS * 3)

    result = orchestrator.run(agent(), task([{"answer": long_answer}]))

    assert result.output == long_answer
    assert len(result.transcript[0]["content"]) < MAX_TRANSCRIPT_CHARS + 50
