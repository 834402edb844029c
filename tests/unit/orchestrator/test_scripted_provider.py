"""The scripted provider: step forms, validation, sleeping and usage.

Every test that asks for an answer runs twice: through ``complete`` (blocking sleeps) and through
``acomplete`` on an event loop (awaited sleeps; the blocking sleep must never be called).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
from orchestrator.errors import ScriptedNotAllowed
from orchestrator.messages import ModelResponse
from orchestrator.providers import call_provider
from orchestrator.providers.scripted import DisabledScriptedProvider

#: Asks a fresh scripted provider for the answer to a request, recording its sleeps in the list if given.
Ask = Callable[..., ModelResponse]


def _must_not_block(seconds: float) -> None:
    raise AssertionError(f"acomplete called the blocking sleep ({seconds} s)")


@pytest.fixture(params=["complete", "acomplete"])
def ask(request: pytest.FixtureRequest) -> Ask:
    def ask(model_request: ModelRequest, slept: list[float] | None = None) -> ModelResponse:
        def record(seconds: float) -> None:
            if slept is not None:
                slept.append(seconds)

        if request.param == "complete":
            return ScriptedProvider(sleep=record).complete(model_request)

        async def asleep(seconds: float) -> None:
            record(seconds)

        provider = ScriptedProvider(sleep=_must_not_block, async_sleep=asleep)
        return asyncio.run(provider.acomplete(model_request))

    return ask


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


def test_tool_step_returns_a_tool_call_with_a_turn_based_id(ask: Ask) -> None:
    script = [{"tool": "calculate", "arguments": {"expression": "1+1"}}]

    response = ask(request(script=script))

    assert response.tool_calls == (
        ToolCall(id="call_0_0", name="calculate", arguments={"expression": "1+1"}),
    )
    assert response.content is None
    assert response.finish_reason == "tool_calls"


def test_step_is_chosen_by_the_number_of_assistant_messages(ask: Ask) -> None:
    script = [{"tool": "calculate", "arguments": {}}, {"answer": "second"}]

    response = ask(request(after_one_tool_call("1"), script=script))

    assert response.content == "second"
    assert response.tool_calls == ()
    assert response.finish_reason == "stop"


def test_running_past_the_end_answers_with_the_last_tool_result(ask: Ask) -> None:
    script = [{"tool": "calculate", "arguments": {}}]

    response = ask(request(after_one_tool_call("42"), script=script))

    assert response.content == "42"


def test_no_script_answers_completed_with_the_task_title(ask: Ask) -> None:
    response = ask(request())

    assert response.content == "Completed: Title line"


def test_fail_step_raises_provider_error_retryable_by_default(ask: Ask) -> None:
    with pytest.raises(ProviderError, match="overloaded") as excinfo:
        ask(request(script=[{"fail": "overloaded"}]))

    assert excinfo.value.retryable is True
    assert excinfo.value.retry_after_ms is None


def test_fail_step_can_be_marked_not_retryable(ask: Ask) -> None:
    with pytest.raises(ProviderError) as excinfo:
        ask(request(script=[{"fail": "bad key", "retryable": False}]))

    assert excinfo.value.retryable is False


def test_sleep_ms_is_slept_before_answering(ask: Ask) -> None:
    slept: list[float] = []

    response = ask(request(script=[{"answer": "late", "sleep_ms": 1500}]), slept)

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
def test_malformed_steps_raise_script_error_naming_index_and_problem(
    script: list[Any], problem: str, ask: Ask
) -> None:
    with pytest.raises(ScriptError, match="step") as excinfo:
        ask(request(script=script))

    assert problem in str(excinfo.value)


def test_script_that_is_not_a_list_raises_script_error(ask: Ask) -> None:
    with pytest.raises(ScriptError, match="list of steps"):
        ask(request(script={"answer": "x"}))


def test_usage_is_deterministic_and_at_least_one(ask: Ask) -> None:
    long_request = request((ChatMessage(role="user", content="x" * 400),), script=[{"answer": "y" * 80}])

    first = ask(long_request)
    second = ask(long_request)

    assert first.usage == second.usage
    assert (first.usage.input_tokens, first.usage.output_tokens) == (100, 20)
    assert ask(request((ChatMessage(role="user", content=""),))).usage.input_tokens == 1


def test_default_provider_registry_holds_scripted_and_builds_it_once() -> None:
    registry = ProviderRegistry()

    assert registry.names() == ("scripted",)
    assert registry.get("scripted") is registry.get("scripted")
    with pytest.raises(UnknownProvider, match=r"'openai'.*scripted"):
        registry.get("openai")


def test_a_streaming_request_gets_the_answer_word_by_word_with_the_chunk_pause_between(ask: Ask) -> None:
    slept: list[float] = []
    pieces: list[str] = []
    script = [{"answer": "Revenue grew  by 9.55%.", "chunk_ms": 50}]
    streaming = replace(request(script=script), on_delta=pieces.append)

    response = ask(streaming, slept)

    assert pieces == ["Revenue ", "grew  ", "by ", "9.55%."]
    assert slept == [0.05, 0.05, 0.05]  # between the words, not before the first
    assert response == ask(request(script=[{"answer": "Revenue grew  by 9.55%."}]))


@pytest.mark.parametrize("chunk_ms", [-1, 10_001, "50", True])
def test_a_bad_chunk_pause_is_a_script_error(chunk_ms: object, ask: Ask) -> None:
    with pytest.raises(ScriptError, match="'chunk_ms' must be an integer from 0 to 10000"):
        ask(request(script=[{"answer": "x", "chunk_ms": chunk_ms}]))


def test_a_chunk_pause_belongs_to_answers_only(ask: Ask) -> None:
    with pytest.raises(ScriptError, match="unknown keys \\['chunk_ms'\\]"):
        ask(request(script=[{"tool": "calculate", "chunk_ms": 5}]))


def test_scripted_delays_on_the_loop_hold_no_thread() -> None:
    # Given 50 calls that each sleep 0.2 s (10 s one after another), and the loop's only thread
    provider = ScriptedProvider(sleep=_must_not_block)
    calls = request(script=[{"answer": "late", "sleep_ms": 200}])

    async def all_at_once() -> list[ModelResponse]:
        async with asyncio.timeout(5):  # a bound, not a measurement: 50 calls of 0.2 s in turn would be 10 s
            return await asyncio.gather(*(call_provider(provider, calls) for _ in range(50)))

    # When / Then: they all answer, together
    assert [response.content for response in asyncio.run(all_at_once())] == ["late"] * 50


def test_the_disabled_provider_refuses_acomplete_as_it_refuses_complete() -> None:
    with pytest.raises(ScriptedNotAllowed):
        DisabledScriptedProvider().complete(request())
    with pytest.raises(ScriptedNotAllowed):
        asyncio.run(DisabledScriptedProvider().acomplete(request()))
