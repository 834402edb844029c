"""The OpenAI and Anthropic providers, through the real SDKs, against local fake servers.

Every test here runs once per provider. The fakes record each request, so tests assert on
what the SDK actually sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator import (
    AgentSpec,
    ChatMessage,
    ModelRequest,
    Orchestrator,
    ProviderAuthError,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderRegistry,
    ProviderSettings,
    ProviderUnavailable,
    RunCancelled,
    RunTimeLimitExceeded,
    TaskInput,
    Usage,
    default_registry,
)
from orchestrator.providers.base_urls import BaseUrlPolicy
from tests.fakes.anthropic_server import (
    FakeAnthropicServer,
    anthropic_error,
    anthropic_text,
    anthropic_tool_uses,
)
from tests.fakes.http_server import FakeReply, FakeServer
from tests.fakes.openai_server import FakeOpenAIServer, openai_error, openai_text, openai_tool_calls

API_KEY = "sk-test-secret-key-0123456789"


@dataclass
class Backend:
    """One provider under test: its fake server and how to script and read it."""

    name: str
    model: str
    server: FakeServer
    base_url: str
    text: Callable[..., FakeReply]
    tool_calls: Callable[..., FakeReply]
    error: Callable[..., FakeReply]
    #: Usage the fake reports per call, and the Usage the provider must turn it into.
    usage_kwargs: Mapping[str, int]
    expected_usage: Usage
    #: Cost of one call with that usage.
    call_cost: Decimal

    def tool_results(self, body: Any) -> list[dict[str, Any]]:
        """The tool results in a request body, as ``{"id", "content", "is_error"}``."""
        results = []
        for message in body["messages"]:
            if self.name == "openai" and message["role"] == "tool":
                results.append(
                    {"id": message["tool_call_id"], "content": message["content"], "is_error": None}
                )
            if (
                self.name == "anthropic"
                and message["role"] == "user"
                and isinstance(message["content"], list)
            ):
                for block in message["content"]:
                    results.append(
                        {
                            "id": block["tool_use_id"],
                            "content": block["content"],
                            "is_error": block["is_error"],
                        }
                    )
        return results

    def tool_names_sent(self, body: Any) -> list[str]:
        if self.name == "openai":
            return [tool["function"]["name"] for tool in body.get("tools", [])]
        return [tool["name"] for tool in body.get("tools", [])]


def _openai_backend(server: FakeOpenAIServer) -> Backend:
    # 1000 prompt tokens of which 200 cached, 100 completion: gpt-4o-mini at 0.15 / 0.60 / 0.075 per M.
    cost = (
        Decimal(800) * Decimal("0.15") + Decimal(200) * Decimal("0.075") + Decimal(100) * Decimal("0.60")
    ) / (10**6)
    return Backend(
        name="openai",
        model="gpt-4o-mini",
        server=server,
        base_url=server.base_url,
        text=openai_text,
        tool_calls=openai_tool_calls,
        error=lambda status, message, headers=None: openai_error(status, message, headers=headers),
        usage_kwargs={
            "prompt_tokens": 1000,
            "completion_tokens": 100,
            "cached_tokens": 200,
            "reasoning_tokens": 30,
        },
        expected_usage=Usage(
            input_tokens=1000, output_tokens=100, cached_input_tokens=200, reasoning_tokens=30
        ),
        call_cost=cost,
    )


def _anthropic_backend(server: FakeAnthropicServer) -> Backend:
    # 700 plain + 200 cache read + 100 cache write input, 100 output: haiku 4.5 at 1 / 5 / 0.10 / 1.25 per M.
    cost = (
        Decimal(700) * 1 + Decimal(200) * Decimal("0.10") + Decimal(100) * Decimal("1.25") + Decimal(100) * 5
    ) / (10**6)
    return Backend(
        name="anthropic",
        model="claude-haiku-4-5",
        server=server,
        base_url=server.base_url,
        text=anthropic_text,
        tool_calls=anthropic_tool_uses,
        error=lambda status, message, headers=None: anthropic_error(status, message, headers=headers),
        usage_kwargs={
            "input_tokens": 700,
            "output_tokens": 100,
            "cache_read_input_tokens": 200,
            "cache_creation_input_tokens": 100,
        },
        expected_usage=Usage(
            input_tokens=1000, output_tokens=100, cached_input_tokens=200, cache_creation_input_tokens=100
        ),
        call_cost=cost,
    )


@pytest.fixture(params=["openai", "anthropic"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "openai":
        with FakeOpenAIServer() as openai_server:
            yield _openai_backend(openai_server)
    else:
        with FakeAnthropicServer() as anthropic_server:
            yield _anthropic_backend(anthropic_server)


class SecretArgs(BaseModel):
    value: int


def make_orchestrator(backend: Backend, *, api_key: str | None = API_KEY) -> tuple[Orchestrator, list[int]]:
    """An orchestrator whose provider talks to the backend's fake, plus a side-effect counter."""
    executed: list[int] = []
    tools = default_registry()

    @tools.tool(name="secret", description="Has a side effect.", args=SecretArgs)
    def secret(args: SecretArgs) -> str:
        executed.append(args.value)
        return f"secret {args.value}"

    settings = {backend.name: ProviderSettings(api_key=api_key, base_url=backend.base_url, timeout_s=10)}
    return Orchestrator(ProviderRegistry.from_settings(settings), tools), executed


def agent(backend: Backend, **overrides: Any) -> AgentSpec:
    fields: dict[str, Any] = {
        "id": "agent-1",
        "name": "helper",
        "provider": backend.name,
        "model": backend.model,
        "system_prompt": "You help.",
        "allowed_tools": ("calculate",),
        **overrides,
    }
    return AgentSpec(**fields)


TASK = TaskInput(id="task-1", title="Do maths", description="Add things up.")


def test_three_turn_loop_runs_calculate_twice_then_answers_with_usage_and_cost(backend: Backend) -> None:
    # Given: two calculate turns, then an answer, each reporting the same usage
    orchestrator, _ = make_orchestrator(backend)
    backend.server.enqueue(
        backend.tool_calls(("calculate", {"expression": "2+3"}), **backend.usage_kwargs),
        backend.tool_calls(("calculate", {"expression": "5*4"}), **backend.usage_kwargs),
        backend.text("The answer is 20.", **backend.usage_kwargs),
    )

    # When
    result = orchestrator.run(agent(backend), TASK)

    # Then: the answer, summed usage, summed cost, and each tool result went back to the model
    assert result.output == "The answer is 20."
    assert result.turns == 3
    assert result.usage == backend.expected_usage + backend.expected_usage + backend.expected_usage
    assert result.cost_usd == backend.call_cost * 3
    model_entries = [entry for entry in result.transcript if entry["type"] == "model"]
    assert [entry["cost_usd"] for entry in model_entries] == [str(backend.call_cost)] * 3
    bodies = [request.body for request in backend.server.requests]
    assert len(bodies) == 3
    assert backend.tool_names_sent(bodies[0]) == ["calculate"]
    assert [r["content"] for r in backend.tool_results(bodies[1])] == ["5"]
    assert [r["content"] for r in backend.tool_results(bodies[2])] == ["5", "20"]
    if backend.name == "anthropic":
        assert bodies[0]["system"] == "You help."
        assert bodies[0]["max_tokens"] == 4096
    else:
        assert bodies[0]["messages"][0] == {"role": "system", "content": "You help."}
        echoed = bodies[1]["messages"][2]
        assert echoed["role"] == "assistant"
        assert echoed["tool_calls"][0]["function"] == {
            "name": "calculate",
            "arguments": '{"expression": "2+3"}',
        }
    assert backend.server.requests[0].headers.get(
        "x-api-key", backend.server.requests[0].headers.get("authorization")
    )


def test_several_tool_calls_in_one_turn_are_all_answered(backend: Backend) -> None:
    orchestrator, _ = make_orchestrator(backend)
    backend.server.enqueue(
        backend.tool_calls(
            ("calculate", {"expression": "1+1"}),
            ("calculate", {"expression": "2+2"}),
            ("calculate", {"expression": "3+3"}),
        ),
        backend.text("done"),
    )

    result = orchestrator.run(agent(backend), TASK)

    assert result.output == "done"
    results = backend.tool_results(backend.server.requests[1].body)
    assert [r["content"] for r in results] == ["2", "4", "6"]
    if backend.name == "anthropic":  # all results share one user message
        assert sum(1 for m in backend.server.requests[1].body["messages"] if m["role"] == "user") == 2


def test_a_disallowed_tool_is_never_executed_and_the_model_gets_an_error_result(backend: Backend) -> None:
    orchestrator, executed = make_orchestrator(backend)
    backend.server.enqueue(backend.tool_calls(("secret", {"value": 7})), backend.text("gave up"))

    result = orchestrator.run(agent(backend, allowed_tools=("calculate",)), TASK)

    assert executed == []
    assert result.output == "gave up"
    [sent] = backend.tool_results(backend.server.requests[1].body)
    assert "not allowed" in sent["content"]
    assert sent["is_error"] in (True, None)  # OpenAI tool messages have no error flag
    assert "secret" not in backend.tool_names_sent(backend.server.requests[0].body)


def test_401_is_not_retryable_after_exactly_one_request_and_hides_the_key(backend: Backend) -> None:
    orchestrator, _ = make_orchestrator(backend)
    backend.server.enqueue(backend.error(401, "invalid x-api-key"))

    with pytest.raises(ProviderAuthError) as caught:
        orchestrator.run(agent(backend), TASK)

    assert caught.value.retryable is False
    assert caught.value.status_code == 401
    assert "401" in str(caught.value) and "invalid x-api-key" in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert len(backend.server.requests) == 1


@pytest.mark.parametrize(
    ("headers", "postpone_ms"),
    [({"retry-after": "2"}, 2000), ({"retry-after-ms": "1500"}, 1500), ({}, 5000)],
)
def test_429_postpones_by_retry_after_after_exactly_one_request(
    backend: Backend, headers: dict[str, str], postpone_ms: int
) -> None:
    orchestrator, _ = make_orchestrator(backend)
    backend.server.enqueue(backend.error(429, "slow down", headers=headers))

    with pytest.raises(ProviderRateLimited) as caught:
        orchestrator.run(agent(backend), TASK)

    assert caught.value.retryable is True
    assert caught.value.postpone_ms == postpone_ms
    assert caught.value.retry_after_ms == (None if not headers else postpone_ms)
    assert len(backend.server.requests) == 1


def test_500_is_retryable_after_exactly_one_request(backend: Backend) -> None:
    orchestrator, _ = make_orchestrator(backend)
    backend.server.enqueue(backend.error(500, "boom"))

    with pytest.raises(ProviderUnavailable) as caught:
        orchestrator.run(agent(backend), TASK)

    assert caught.value.retryable is True
    assert caught.value.postpone_ms is None
    assert len(backend.server.requests) == 1


def test_an_error_mid_run_carries_the_usage_transcript_and_cost_so_far(backend: Backend) -> None:
    orchestrator, _ = make_orchestrator(backend)
    backend.server.enqueue(
        backend.tool_calls(("calculate", {"expression": "2+3"}), **backend.usage_kwargs),
        backend.error(503, "overloaded"),
    )

    with pytest.raises(ProviderUnavailable) as caught:
        orchestrator.run(agent(backend), TASK)

    assert caught.value.usage == backend.expected_usage
    assert [entry["type"] for entry in caught.value.transcript] == ["model", "tool"]
    assert caught.value.cost_usd == backend.call_cost


def test_a_slow_answer_past_the_run_time_limit_ends_the_run_with_run_time_limit_exceeded(
    backend: Backend,
) -> None:
    # The provider call's timeout is the run's remaining time, so the SDK gives up at the limit.
    orchestrator, _ = make_orchestrator(backend)
    backend.server.enqueue(backend.text("too late", delay_s=10))

    with pytest.raises(RunTimeLimitExceeded) as caught:
        orchestrator.run(agent(backend, run_time_limit_s=0.3), TASK)

    assert caught.value.seconds == 0.3
    assert caught.value.retryable is False
    assert len(backend.server.requests) == 1


def test_cancellation_before_the_second_model_call_stops_after_one_request(backend: Backend) -> None:
    orchestrator, _ = make_orchestrator(backend)
    backend.server.enqueue(backend.tool_calls(("calculate", {"expression": "2+3"})), backend.text("never"))

    with pytest.raises(RunCancelled) as caught:
        orchestrator.run(agent(backend), TASK, should_stop=lambda: len(backend.server.requests) >= 1)

    assert caught.value.retryable is False
    assert len(backend.server.requests) == 1


def test_a_missing_api_key_fails_clearly_without_any_request(backend: Backend) -> None:
    orchestrator, _ = make_orchestrator(backend, api_key=None)

    with pytest.raises(ProviderNotConfigured) as caught:
        orchestrator.run(agent(backend), TASK)

    variable = "OPENAI_API_KEY" if backend.name == "openai" else "ANTHROPIC_API_KEY"
    assert caught.value.variable == variable
    assert variable in str(caught.value)
    assert caught.value.retryable is False
    assert backend.server.requests == []


def test_an_agent_base_url_overrides_the_provider_settings(backend: Backend) -> None:
    # Given: settings pointing nowhere useful, the agent pointing at the fake
    settings = {
        backend.name: ProviderSettings(api_key=API_KEY, base_url="http://127.0.0.1:9/v1", timeout_s=5)
    }
    allowed = BaseUrlPolicy([backend.base_url])
    orchestrator = Orchestrator(ProviderRegistry.from_settings(settings), base_urls=allowed)
    backend.server.enqueue(backend.text("hi"), backend.text("again"))

    first = orchestrator.run(agent(backend, base_url=backend.base_url), TASK)
    second = orchestrator.run(agent(backend, base_url=backend.base_url), TASK)

    assert (first.output, second.output) == ("hi", "again")
    assert len(backend.server.requests) == 2
    provider = orchestrator.providers.get(backend.name)
    # one client per base URL, reused: an async one, as the loop calls ``acomplete`` on the process's loop
    assert len(provider._async_clients) == 1  # type: ignore[attr-defined]
    assert len(provider._clients) == 0  # type: ignore[attr-defined]


def _rate_headers(backend: Backend, remaining: int) -> dict[str, str]:
    if backend.name == "openai":
        return {"x-ratelimit-remaining-requests": str(remaining), "x-ratelimit-reset-requests": "2s"}
    reset = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    return {
        "anthropic-ratelimit-requests-remaining": str(remaining),
        "anthropic-ratelimit-requests-reset": reset,
    }


def test_the_answers_rate_limit_headers_reach_the_loop(backend: Backend) -> None:
    # Given an answer, then a 429, each telling how many requests are left
    registry = ProviderRegistry.from_settings(
        {backend.name: ProviderSettings(api_key=API_KEY, base_url=backend.base_url, timeout_s=10)}
    )
    provider = registry.get(backend.name)
    backend.server.enqueue(
        replace(backend.text("hi"), headers=_rate_headers(backend, 7)),
        backend.error(429, "slow down", headers={"retry-after": "2", **_rate_headers(backend, 0)}),
    )
    request = ModelRequest(
        model=backend.model,
        system_prompt=None,
        messages=(ChatMessage("user", "hi"),),
        tools=(),
        temperature=None,
        max_tokens=10,
    )

    answer = provider.complete(request)
    with pytest.raises(ProviderRateLimited) as refused:
        provider.complete(request)

    assert answer.rate_limits is not None and answer.rate_limits.requests_remaining == 7
    assert (
        answer.rate_limits.requests_reset_ms is not None and 0 < answer.rate_limits.requests_reset_ms <= 2000
    )
    assert refused.value.rate_limits is not None and refused.value.rate_limits.requests_remaining == 0
