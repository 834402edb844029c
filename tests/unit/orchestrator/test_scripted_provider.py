"""The scripted provider: step forms, validation, sleeping and usage."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from orchestrator import (
    ChatMessage,
    ModelRequest,
    ProviderError,
    ProviderRegistry,
    ScriptedProvider,
    ScriptError,
    ToolCall,
    UnknownProvider,
)


def request(messages: tuple[ChatMessage, ...] = (), **context: Any) -> ModelRequest:
    if not messages:
        messages = (ChatMessage(role="user", content="Title line\n\nDetails"),)
    return ModelRequest(
        model="scripted-1",
        system_prompt=None,
        messages=messages,
        tools=(),
        temperature=None,
        max_tokens=None,
        context=context,
    )


def after_one_tool_call(result: str) -> tuple[ChatMessage, ...]:
    call = ToolCall(id="call_0_0", name="calculate", arguments={"expression": "1"})
    return (
        ChatMessage(role="user", content="Title line"),
        ChatMessage(role="assistant", content="", tool_calls=(call,)),
        ChatMessage(role="tool", content=result, tool_call_id="call_0_0"),
    )


def test_tool_step_returns_a_tool_call_with_a_turn_based_id() -> None:
    script = [{"tool": "calculate", "arguments": {"expression": "1+1"}}]

    response = ScriptedProvider().complete(request(script=script))

    assert response.tool_calls == (
        ToolCall(id="call_0_0", name="calculate", arguments={"expression": "1+1"}),
    )
    assert response.content is None
    assert response.finish_reason == "tool_calls"


def test_step_is_chosen_by_the_number_of_assistant_messages() -> None:
    script = [{"tool": "calculate", "arguments": {}}, {"answer": "second"}]

    response = ScriptedProvider().complete(request(after_one_tool_call("1"), script=script))

    assert response.content == "second"
    assert response.tool_calls == ()
    assert response.finish_reason == "stop"


def test_running_past_the_end_answers_with_the_last_tool_result() -> None:
    script = [{"tool": "calculate", "arguments": {}}]

    response = ScriptedProvider().complete(request(after_one_tool_call("42"), script=script))

    assert response.content == "42"


def test_no_script_answers_completed_with_the_task_title() -> None:
    response = ScriptedProvider().complete(request())

    assert response.content == "Completed: Title line"


def test_fail_step_raises_provider_error_retryable_by_default() -> None:
    with pytest.raises(ProviderError, match="overloaded") as excinfo:
        ScriptedProvider().complete(request(script=[{"fail": "overloaded"}]))

    assert excinfo.value.retryable is True
    assert excinfo.value.retry_after_ms is None


def test_fail_step_can_be_marked_not_retryable() -> None:
    with pytest.raises(ProviderError) as excinfo:
        ScriptedProvider().complete(request(script=[{"fail": "bad key", "retryable": False}]))

    assert excinfo.value.retryable is False


def test_sleep_ms_is_slept_before_answering() -> None:
    slept: list[float] = []

    response = ScriptedProvider(sleep=slept.append).complete(
        request(script=[{"answer": "late", "sleep_ms": 1500}])
    )

    assert slept == [1.5]
    assert response.content == "late"


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ([{"answer": "ok"}, "not a step"], "step 1 must be an object"),
        ([{}], "exactly one of"),
        ([{"answer": "a", "fail": "b"}], "exactly one of"),
        ([{"answer": 3}], "'answer' must be a string"),
        ([{"tool": ""}], "non-empty string"),
        ([{"tool": "t", "arguments": [1]}], "must be an object"),
        ([{"tools": []}], "non-empty list"),
        ([{"tools": [{"name": "t", "args": {}}]}], "unknown keys"),
        ([{"answer": "a", "sleep_ms": -1}], "'sleep_ms'"),
        ([{"answer": "a", "sleep_ms": 600_001}], "'sleep_ms'"),
        ([{"fail": "x", "retryable": "yes"}], "'retryable'"),
        ([{"answer": "a", "extra": 1}], "unknown keys"),
    ],
)
def test_malformed_steps_raise_script_error_naming_index_and_problem(script: list[Any], problem: str) -> None:
    with pytest.raises(ScriptError, match="step") as excinfo:
        ScriptedProvider().complete(request(script=script))

    assert problem in str(excinfo.value)


def test_script_that_is_not_a_list_raises_script_error() -> None:
    with pytest.raises(ScriptError, match="list of steps"):
        ScriptedProvider().complete(request(script={"answer": "x"}))


def test_usage_is_deterministic_and_at_least_one() -> None:
    long_request = request((ChatMessage(role="user", content="x" * 400),), script=[{"answer": "y" * 80}])

    first = ScriptedProvider().complete(long_request)
    second = ScriptedProvider().complete(long_request)

    assert first.usage == second.usage
    assert (first.usage.input_tokens, first.usage.output_tokens) == (100, 20)
    assert (
        ScriptedProvider().complete(request((ChatMessage(role="user", content=""),))).usage.input_tokens == 1
    )


def test_default_provider_registry_holds_scripted_and_builds_it_once() -> None:
    registry = ProviderRegistry()

    assert registry.names() == ("scripted",)
    assert registry.get("scripted") is registry.get("scripted")
    with pytest.raises(UnknownProvider, match=r"'openai'.*scripted"):
        registry.get("openai")


def test_a_streaming_request_gets_the_answer_word_by_word_with_the_chunk_pause_between() -> None:
    slept: list[float] = []
    pieces: list[str] = []
    script = [{"answer": "Revenue grew  by 9.55%.", "chunk_ms": 50}]
    streaming = replace(request(script=script), on_delta=pieces.append)

    response = ScriptedProvider(sleep=slept.append).complete(streaming)

    assert pieces == ["Revenue ", "grew  ", "by ", "9.55%."]
    assert slept == [0.05, 0.05, 0.05]  # between the words, not before the first
    assert response == ScriptedProvider().complete(request(script=[{"answer": "Revenue grew  by 9.55%."}]))


@pytest.mark.parametrize("chunk_ms", [-1, 10_001, "50", True])
def test_a_bad_chunk_pause_is_a_script_error(chunk_ms: object) -> None:
    with pytest.raises(ScriptError, match="'chunk_ms' must be an integer from 0 to 10000"):
        ScriptedProvider().complete(request(script=[{"answer": "x", "chunk_ms": chunk_ms}]))


def test_a_chunk_pause_belongs_to_answers_only() -> None:
    with pytest.raises(ScriptError, match="unknown keys \\['chunk_ms'\\]"):
        ScriptedProvider().complete(request(script=[{"tool": "calculate", "chunk_ms": 5}]))
