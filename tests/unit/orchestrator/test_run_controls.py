"""Fallback, tool timeouts, hooks, argument errors and error classification."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator import (
    AgentSpec,
    InvalidAgentSpec,
    ModelRequest,
    ModelResponse,
    Orchestrator,
    OrchestratorHooks,
    ProviderAuthError,
    ProviderInvalidRequest,
    ProviderQuotaExceeded,
    ProviderRegistry,
    ProviderSettings,
    ProviderUnavailable,
    TaskInput,
    ToolCall,
    ToolOutcome,
    ToolTimeout,
    default_registry,
)
from orchestrator.providers._http import classify_status, parse_retry_after_ms
from orchestrator.providers.base_urls import BaseUrlPolicy
from tests.fakes.anthropic_server import FakeAnthropicServer, anthropic_text, anthropic_tool_uses
from tests.fakes.openai_server import FakeOpenAIServer, openai_error, openai_text, openai_tool_calls

API_KEY = "sk-test"
TASK = TaskInput(id="task-1", title="Do maths")


@pytest.fixture
def servers() -> Iterator[tuple[FakeOpenAIServer, FakeAnthropicServer]]:
    with FakeOpenAIServer() as openai_server, FakeAnthropicServer() as anthropic_server:
        yield openai_server, anthropic_server


def both(openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer) -> ProviderRegistry:
    return ProviderRegistry.from_settings(
        {
            "openai": ProviderSettings(api_key=API_KEY, base_url=openai_server.base_url, timeout_s=10),
            "anthropic": ProviderSettings(api_key=API_KEY, base_url=anthropic_server.base_url, timeout_s=10),
        }
    )


def spec(**overrides: Any) -> AgentSpec:
    fields: dict[str, Any] = {
        "id": "agent-1",
        "name": "helper",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "allowed_tools": ("calculate",),
        **overrides,
    }
    return AgentSpec(**fields)


def test_a_failing_primary_falls_back_for_the_same_turn_and_stays_on_the_fallback(
    servers: tuple[FakeOpenAIServer, FakeAnthropicServer],
) -> None:
    # Given: OpenAI answers 500; Anthropic runs a tool, then answers
    openai_server, anthropic_server = servers
    openai_server.enqueue(openai_error(500, "boom"))
    anthropic_server.enqueue(anthropic_tool_uses(("calculate", {"expression": "6*7"})), anthropic_text("42"))
    agent = spec(fallback_provider="anthropic", fallback_model="claude-haiku-4-5")

    # When
    result = Orchestrator(both(*servers)).run(agent, TASK)

    # Then: one OpenAI request; the rest went to Anthropic; the switch is in the transcript
    assert result.output == "42"
    assert (result.provider, result.model) == ("anthropic", "claude-haiku-4-5-20251001")
    assert len(openai_server.requests) == 1
    assert len(anthropic_server.requests) == 2
    switch = result.transcript[0]
    assert switch["type"] == "fallback"
    assert (switch["from_provider"], switch["to_provider"]) == ("openai", "anthropic")
    assert "500" in switch["error"]
    assert anthropic_server.requests[0].body["model"] == "claude-haiku-4-5"


def test_a_non_retryable_error_never_falls_back(
    servers: tuple[FakeOpenAIServer, FakeAnthropicServer],
) -> None:
    openai_server, anthropic_server = servers
    openai_server.enqueue(openai_error(401, "bad key"))

    with pytest.raises(ProviderAuthError):
        Orchestrator(both(*servers)).run(
            spec(fallback_provider="anthropic", fallback_model="claude-haiku-4-5"), TASK
        )

    assert anthropic_server.requests == []


def test_a_fallback_model_on_the_same_provider_keeps_the_agent_base_url(
    servers: tuple[FakeOpenAIServer, FakeAnthropicServer],
) -> None:
    openai_server, _ = servers
    openai_server.enqueue(openai_error(503, "overloaded"), openai_text("ok", model="gpt-4o"))
    registry = ProviderRegistry.from_settings(
        {"openai": ProviderSettings(api_key=API_KEY, base_url="http://127.0.0.1:9/v1")}
    )

    orchestrator = Orchestrator(registry, base_urls=BaseUrlPolicy([openai_server.base_url]))
    result = orchestrator.run(spec(base_url=openai_server.base_url, fallback_model="gpt-4o"), TASK)

    assert result.output == "ok"
    assert [r.body["model"] for r in openai_server.requests] == ["gpt-4o-mini", "gpt-4o"]


def test_tool_arguments_that_are_not_json_go_back_to_the_model_as_an_error(
    servers: tuple[FakeOpenAIServer, FakeAnthropicServer],
) -> None:
    openai_server, _ = servers
    openai_server.enqueue(openai_tool_calls(("calculate", '{"expression": "1+')), openai_text("sorry"))

    result = Orchestrator(both(*servers)).run(spec(), TASK)

    assert result.output == "sorry"
    sent = openai_server.requests[1].body["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["arguments"] == '{"expression": "1+'  # echoed verbatim
    assert sent[-1]["role"] == "tool" and "not valid JSON" in sent[-1]["content"]


class WaitArgs(BaseModel):
    pass


def test_a_tool_running_past_its_timeout_ends_the_run_with_tool_timeout() -> None:
    release = threading.Event()
    tools = default_registry()

    @tools.tool(name="hang", description="Waits.", args=WaitArgs)
    def hang(args: WaitArgs) -> str:
        release.wait(10)
        return "late"

    agent = AgentSpec(
        id="a",
        name="a",
        provider="scripted",
        model="scripted-1",
        allowed_tools=("hang",),
        tool_timeout_s=0.05,
    )
    task = TaskInput(id="t", title="t", context={"script": [{"tool": "hang"}, {"answer": "never"}]})
    try:
        with pytest.raises(ToolTimeout) as caught:
            Orchestrator(tools=tools).run(agent, task)
    finally:
        release.set()

    assert (caught.value.tool, caught.value.seconds) == ("hang", 0.05)
    assert caught.value.retryable is True
    assert [entry["type"] for entry in caught.value.transcript] == ["model"]


class RecordingHooks(OrchestratorHooks):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_run_start(self, agent: AgentSpec, task: TaskInput) -> None:
        self.events.append("run_start")

    def on_llm_start(self, request: ModelRequest, *, provider: str) -> None:
        self.events.append(f"llm_start:{provider}")
        raise RuntimeError("a broken hook must not break the run")

    def on_llm_end(
        self,
        request: ModelRequest,
        response: ModelResponse | None,
        error: BaseException | None,
        *,
        provider: str,
    ) -> None:
        self.events.append("llm_end")

    def on_tool_start(self, call: ToolCall) -> None:
        self.events.append(f"tool_start:{call.name}")

    def on_tool_end(self, call: ToolCall, outcome: ToolOutcome | None, error: BaseException | None) -> None:
        self.events.append(f"tool_end:{outcome.content if outcome else error}")

    def on_run_end(self, result: Any, error: BaseException | None) -> None:
        self.events.append(f"run_end:{result.output if result else error}")


def test_hooks_see_every_step_in_order_and_a_raising_hook_is_ignored() -> None:
    hooks = RecordingHooks()
    agent = AgentSpec(id="a", name="a", provider="scripted", model="scripted-1", allowed_tools=("calculate",))
    task = TaskInput(
        id="t",
        title="t",
        context={"script": [{"tool": "calculate", "arguments": {"expression": "1+2"}}, {"answer": "3"}]},
    )

    Orchestrator().run(agent, task, hooks=hooks)

    assert hooks.events == [
        "run_start",
        "llm_start:scripted",
        "llm_end",
        "tool_start:calculate",
        "tool_end:3",
        "llm_start:scripted",
        "llm_end",
        "run_end:3",
    ]


def test_agent_spec_refuses_non_positive_time_limits() -> None:
    with pytest.raises(InvalidAgentSpec, match="tool_timeout_s"):
        spec(tool_timeout_s=0)
    with pytest.raises(InvalidAgentSpec, match="run_time_limit_s"):
        spec(run_time_limit_s=-1)


def test_a_registry_from_settings_always_has_scripted_and_refuses_unknown_kinds() -> None:
    registry = ProviderRegistry.from_settings({"openrouter": ProviderSettings(kind="openai", api_key="k")})
    assert registry.names() == ("openrouter", "scripted")
    assert registry.get("openrouter").name == "openrouter"
    with pytest.raises(ValueError, match="unknown kind 'gemini'"):
        ProviderRegistry.from_settings({"gemini": ProviderSettings(api_key="k")})


@pytest.mark.parametrize(
    ("status", "code", "error_class", "retryable"),
    [
        (408, None, ProviderUnavailable, True),
        (409, None, ProviderUnavailable, True),
        (529, None, ProviderUnavailable, True),
        (403, None, ProviderAuthError, False),
        (400, None, ProviderInvalidRequest, False),
        (404, None, ProviderInvalidRequest, False),
        (422, None, ProviderInvalidRequest, False),
        (429, "insufficient_quota", ProviderQuotaExceeded, False),
    ],
)
def test_http_statuses_are_classified(
    status: int, code: str | None, error_class: type, retryable: bool
) -> None:
    error = classify_status("openai", status, "message", {}, code)
    assert type(error) is error_class
    assert error.retryable is retryable
    assert f"HTTP {status}" in str(error)


def test_retry_after_is_read_as_milliseconds_seconds_or_an_http_date() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    in_three_seconds = format_datetime(now + timedelta(seconds=3), usegmt=True)
    assert parse_retry_after_ms({"Retry-After-Ms": "250"}) == 250
    assert parse_retry_after_ms({"retry-after": "1.5"}) == 1500
    assert parse_retry_after_ms({"retry-after": in_three_seconds}, now=now.timestamp()) == 3000
    assert parse_retry_after_ms({"retry-after": "soon"}) is None
    assert parse_retry_after_ms({}) is None
