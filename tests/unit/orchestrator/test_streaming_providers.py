"""Streaming model calls through the real OpenAI and Anthropic SDKs, against the fake servers' SSE.

A request with ``on_delta`` streams: the text arrives piece by piece and the provider returns the very
``ModelResponse`` the same answer gives without streaming. Every test runs once per provider and way of
calling it (``complete``, and ``acomplete`` on an event loop).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from orchestrator import (
    ProviderError,
    ProviderRateLimited,
    ProviderRegistry,
    ProviderSettings,
    ProviderTimeout,
    ProviderUnavailable,
)
from orchestrator.messages import ChatMessage, ModelRequest, ToolSpec
from orchestrator.providers.base import Provider
from tests.fakes.anthropic_server import (
    FakeAnthropicServer,
    anthropic_error,
    anthropic_text,
    anthropic_tool_uses,
)
from tests.fakes.http_server import FakeReply, FakeServer, sse_event
from tests.fakes.openai_server import FakeOpenAIServer, openai_error, openai_text, openai_tool_calls
from tests.unit.orchestrator.conftest import Call

API_KEY = "sk-test-streaming-key-0123456789"
ANSWER = "Revenue grew by 11,500 (9.55%) over Q2."


@dataclass
class Backend:
    name: str
    model: str
    server: FakeServer
    text: Callable[..., FakeReply]
    tool_calls: Callable[..., FakeReply]
    error: Callable[..., FakeReply]
    #: A stream that starts, then reports an error inside it.
    error_inside: Callable[[], list[bytes]]

    def provider(self, timeout_s: float = 10) -> Provider:
        base_url = self.server.base_url  # type: ignore[attr-defined]
        settings = {self.name: ProviderSettings(api_key=API_KEY, base_url=base_url, timeout_s=timeout_s)}
        return ProviderRegistry.from_settings(settings).get(self.name)


def _openai_error_inside() -> list[bytes]:
    first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    first["choices"] = [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]
    return [sse_event(first), sse_event({"error": {"message": "server overloaded", "type": "server_error"}})]


def _anthropic_error_inside() -> list[bytes]:
    start = {
        "type": "message_start",
        "message": {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    }
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return [sse_event(start, "message_start"), sse_event(overloaded, "error")]


@pytest.fixture(params=["openai", "anthropic"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "openai":
        with FakeOpenAIServer() as openai_server:
            yield Backend(
                "openai",
                "gpt-4o-mini",
                openai_server,
                openai_text,
                openai_tool_calls,
                lambda status, message, headers=None: openai_error(status, message, headers=headers),
                _openai_error_inside,
            )
    else:
        with FakeAnthropicServer() as anthropic_server:
            yield Backend(
                "anthropic",
                "claude-haiku-4-5",
                anthropic_server,
                anthropic_text,
                anthropic_tool_uses,
                lambda status, message, headers=None: anthropic_error(status, message, headers=headers),
                _anthropic_error_inside,
            )


def request(backend: Backend, on_delta: Callable[[str], None] | None) -> ModelRequest:
    return ModelRequest(
        model=backend.model,
        system_prompt="You help.",
        messages=(ChatMessage(role="user", content="How did revenue do?"),),
        tools=(ToolSpec("calculate", "Arithmetic.", {"type": "object", "properties": {}}),),
        temperature=None,
        max_tokens=None,
        on_delta=on_delta,
    )


def test_a_streamed_answer_arrives_in_pieces_and_is_the_same_response_as_without_streaming(
    backend: Backend, call: Call
) -> None:
    # Given the same answer scripted twice, with usage
    reply = backend.text(ANSWER)
    backend.server.enqueue(reply, reply)
    provider = backend.provider()
    pieces: list[str] = []

    # When it is asked once without and once with streaming
    plain = call(provider, request(backend, None))
    streamed = call(provider, request(backend, pieces.append))

    # Then the text came in several pieces that make up the answer, and both responses are equal
    assert len(pieces) > 3 and "".join(pieces) == ANSWER
    assert streamed == plain
    assert (
        streamed.content == ANSWER and streamed.usage.input_tokens == 10 and streamed.usage.output_tokens == 5
    )
    # and the SDK asked for a stream (with the usage, on OpenAI)
    plain_body, stream_body = (sent.body for sent in backend.server.requests)
    assert "stream" not in plain_body and stream_body["stream"] is True
    if backend.name == "openai":
        assert stream_body["stream_options"] == {"include_usage": True}


def test_streamed_tool_calls_are_assembled_exactly_as_the_plain_answer_gives_them(
    backend: Backend, call: Call
) -> None:
    # Given two tool calls (arguments streamed in fragments)
    calls = (("calculate", {"expression": "131900 - 120400"}), ("calculate", {"expression": "2 ** 10"}))
    reply = backend.tool_calls(*calls)
    backend.server.enqueue(reply, reply)
    provider = backend.provider()
    pieces: list[str] = []

    # When
    plain = call(provider, request(backend, None))
    streamed = call(provider, request(backend, pieces.append))

    # Then the same calls, ids, arguments and finish reason; no text
    assert streamed == plain
    assert [(call.name, call.arguments) for call in streamed.tool_calls] == [
        (name, arguments) for name, arguments in calls
    ]
    assert pieces == []


def test_an_error_answer_to_a_streaming_request_is_classified_as_without_streaming(
    backend: Backend, call: Call
) -> None:
    # Given a 429 with Retry-After
    backend.server.enqueue(backend.error(429, "slow down", {"retry-after": "3"}))

    # When / Then
    with pytest.raises(ProviderRateLimited) as raised:
        call(backend.provider(), request(backend, lambda text: None))
    assert raised.value.retry_after_ms == 3000 and raised.value.retryable


def test_a_stream_that_breaks_off_is_a_retryable_provider_error(backend: Backend, call: Call) -> None:
    # Given an answer whose connection is closed after a few events
    backend.server.enqueue(replace(backend.text(ANSWER), cut_after=4))
    pieces: list[str] = []

    # When / Then: retryable, the key never in the message; what arrived was passed on
    with pytest.raises(ProviderUnavailable) as raised:
        call(backend.provider(), request(backend, pieces.append))
    assert raised.value.retryable and API_KEY not in str(raised.value)
    assert ANSWER.startswith("".join(pieces))


def test_an_error_sent_inside_the_stream_ends_the_call_with_a_retryable_error(
    backend: Backend, call: Call
) -> None:
    # Given a stream that starts, then reports an overloaded server
    backend.server.enqueue(FakeReply({}, sse=backend.error_inside()))

    # When / Then
    with pytest.raises(ProviderError) as raised:
        call(backend.provider(), request(backend, lambda text: None))
    assert raised.value.retryable
    assert "overloaded" in str(raised.value).lower()


def test_a_stream_that_never_finishes_is_an_error_not_a_short_answer(backend: Backend, call: Call) -> None:
    # Given every event of the answer but the last ones (the finish), then a clean end of the body
    events = backend.server.stream_events(
        backend.text(ANSWER).body, {"stream_options": {"include_usage": True}}
    )
    backend.server.enqueue(FakeReply({}, sse=events[:-3]))

    # When / Then
    with pytest.raises(ProviderUnavailable, match="ended before the model finished"):
        call(backend.provider(), request(backend, lambda text: None))


def test_an_answer_trickling_in_past_the_call_timeout_ends_with_a_timeout(
    backend: Backend, call: Call
) -> None:
    # Given an answer whose events come 0.2 s apart (each read is quick), and a 1 s call timeout
    backend.server.enqueue(replace(backend.text(ANSWER), chunk_delay_s=0.2))
    pieces: list[str] = []

    # When / Then
    with pytest.raises(ProviderTimeout):
        call(backend.provider(timeout_s=1.0), request(backend, pieces.append))
    assert 0 < len("".join(pieces)) < len(ANSWER)


def test_a_streamed_answer_carries_the_providers_rate_limit_headers(backend: Backend, call: Call) -> None:
    # Given a streamed answer whose headers say how many requests are left
    if backend.name == "openai":
        headers = {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "20s"}
    else:
        headers = {
            "anthropic-ratelimit-requests-remaining": "3",
            "anthropic-ratelimit-requests-reset": "2000-01-01T00:00:00Z",
        }
    backend.server.enqueue(replace(backend.text(ANSWER), headers=headers))

    # When it streams
    streamed = call(backend.provider(), request(backend, lambda piece: None))

    # Then the limiter sees the provider's count, as for a plain answer
    assert streamed.rate_limits is not None and streamed.rate_limits.requests_remaining == 3
