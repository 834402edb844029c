"""``acomplete``: the OpenAI and Anthropic providers through the real async SDKs, against the fake servers.

Tests whose expectations hold for both ways of calling run twice (the ``call`` fixture: ``complete``, and
``acomplete`` on a new event loop); cancellation, concurrency and the per-loop clients are about the
event loop only. Every test runs once per provider.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from orchestrator import ProviderAuthError, ProviderRateLimited, ProviderRegistry, ProviderSettings
from orchestrator.errors import ProviderTimeout
from orchestrator.messages import ChatMessage, ModelRequest, ModelResponse, ToolSpec, Usage
from orchestrator.providers import AsyncProvider, Provider, call_provider
from tests.fakes.anthropic_server import (
    FakeAnthropicServer,
    anthropic_error,
    anthropic_text,
    anthropic_tool_uses,
)
from tests.fakes.fast_openai_server import FastOpenAIServer
from tests.fakes.http_server import FakeReply, FakeServer
from tests.fakes.openai_server import FakeOpenAIServer, openai_error, openai_text, openai_tool_calls
from tests.unit.orchestrator.conftest import Call

API_KEY = "sk-test-async-key-0123456789"
#: Longest any test waits for something to happen.
BOUND_S = 20.0


@dataclass
class Backend:
    name: str
    model: str
    server: FakeServer
    text: Callable[..., FakeReply]
    tool_calls: Callable[..., FakeReply]
    error: Callable[..., FakeReply]
    #: Headers saying how many requests are left.
    rate_headers: dict[str, str]

    @property
    def base_url(self) -> str:
        return str(self.server.base_url)  # type: ignore[attr-defined]

    def provider(self, timeout_s: float = 10, base_url: str | None = None) -> Provider:
        settings = ProviderSettings(api_key=API_KEY, base_url=base_url or self.base_url, timeout_s=timeout_s)
        return ProviderRegistry.from_settings({self.name: settings}).get(self.name)


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
                {"x-ratelimit-remaining-requests": "7", "x-ratelimit-reset-requests": "2s"},
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
                {
                    "anthropic-ratelimit-requests-remaining": "7",
                    "anthropic-ratelimit-requests-reset": "2000-01-01T00:00:00Z",
                },
            )


def ask(
    backend: Backend, *, on_delta: Callable[[str], None] | None = None, timeout_s: float | None = None
) -> ModelRequest:
    return ModelRequest(
        model=backend.model,
        system_prompt="You help.",
        messages=(ChatMessage(role="user", content="Add 2 and 3."),),
        tools=(ToolSpec("calculate", "Arithmetic.", {"type": "object", "properties": {}}),),
        temperature=0.5,
        max_tokens=50,
        timeout_s=timeout_s,
        on_delta=on_delta,
    )


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait (at most :data:`BOUND_S`) for ``condition``, which other threads (the fake server) make true."""
    deadline = asyncio.get_running_loop().time() + BOUND_S
    # a poll: the condition is another thread's state, which no asyncio.Event of this loop can signal
    while not condition() and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert condition(), what


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    asyncio.run(_until(condition, what))


def test_a_plain_answer_with_usage_and_rate_limits(backend: Backend, call: Call) -> None:
    backend.server.enqueue(replace(backend.text("5"), headers=backend.rate_headers))

    answer = call(backend.provider(), ask(backend))

    assert answer.content == "5" and answer.tool_calls == ()
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (10, 5)
    assert answer.rate_limits is not None and answer.rate_limits.requests_remaining == 7
    [sent] = backend.server.requests
    assert sent.body["model"] == backend.model and sent.body["messages"][-1]["content"] == "Add 2 and 3."
    assert sent.body["temperature"] == 0.5  # the Anthropic SDK 1.x has no keyword for it: sent in the body
    assert "stream" not in sent.body


def test_tool_calls_come_back_as_tool_calls(backend: Backend, call: Call) -> None:
    backend.server.enqueue(backend.tool_calls(("calculate", {"expression": "2+3"}), ("calculate", {"x": 1})))

    answer = call(backend.provider(), ask(backend))

    assert [(c.name, c.arguments, c.argument_error) for c in answer.tool_calls] == [
        ("calculate", {"expression": "2+3"}, None),
        ("calculate", {"x": 1}, None),
    ]
    assert answer.content is None and answer.tool_calls[0].id != answer.tool_calls[1].id


def test_openai_tool_arguments_that_are_not_an_object_are_marked(call: Call) -> None:
    with FakeOpenAIServer() as server:
        server.enqueue(openai_tool_calls(("calculate", "[1, 2]")))
        settings = ProviderSettings(api_key=API_KEY, base_url=server.base_url, timeout_s=10)
        provider = ProviderRegistry.from_settings({"openai": settings}).get("openai")

        [bad] = call(
            provider, ModelRequest("gpt-4o-mini", None, (ChatMessage("user", "hi"),), (), None, None)
        ).tool_calls

    assert bad.argument_error == "expected a JSON object, got list" and bad.arguments == {}


def test_streamed_deltas_make_up_the_answer_that_is_returned(backend: Backend, call: Call) -> None:
    backend.server.enqueue(backend.text("Revenue grew by 11,500 over Q2."))
    pieces: list[str] = []

    answer = call(backend.provider(), ask(backend, on_delta=pieces.append))

    assert len(pieces) > 3 and "".join(pieces) == answer.content == "Revenue grew by 11,500 over Q2."
    assert backend.server.requests[0].body["stream"] is True


def test_401_is_an_auth_error_that_hides_the_key(backend: Backend, call: Call) -> None:
    backend.server.enqueue(backend.error(401, f"invalid key {API_KEY}"))

    with pytest.raises(ProviderAuthError) as raised:
        call(backend.provider(), ask(backend))

    assert raised.value.retryable is False and raised.value.status_code == 401
    assert API_KEY not in str(raised.value) and "invalid key ***" in str(raised.value)
    assert len(backend.server.requests) == 1


@pytest.mark.parametrize("streaming", [False, True])
def test_429_is_rate_limited_for_retry_after(backend: Backend, call: Call, streaming: bool) -> None:
    backend.server.enqueue(
        backend.error(429, "slow down", headers={"retry-after": "2", **backend.rate_headers})
    )
    on_delta = (lambda piece: None) if streaming else None

    with pytest.raises(ProviderRateLimited) as raised:
        call(backend.provider(), ask(backend, on_delta=on_delta))

    assert raised.value.retryable is True and raised.value.retry_after_ms == 2000
    assert raised.value.rate_limits is not None and raised.value.rate_limits.requests_remaining == 7


def test_a_call_past_its_timeout_is_a_provider_timeout_and_the_request_is_abandoned(
    backend: Backend, call: Call
) -> None:
    backend.server.enqueue(backend.text("too late", delay_s=10))

    with pytest.raises(ProviderTimeout) as raised:
        call(backend.provider(), ask(backend, timeout_s=0.3))

    assert raised.value.retryable is True
    _wait_until(lambda: backend.server.disconnects == 1, "the server saw the client give up")


@pytest.mark.parametrize(
    "moment", ["waiting for the answer", "waiting for the answer, streaming", "mid-stream"]
)
def test_cancelling_the_task_aborts_the_request_and_raises_cancelled_error(
    backend: Backend, moment: str
) -> None:
    # Given a call whose answer is slow to start, or whose stream is slow to go on
    if moment == "mid-stream":
        reply = replace(backend.text("one two three four five six seven eight"), chunk_delay_s=2)
    else:
        reply = backend.text("too late", delay_s=10)
    backend.server.enqueue(reply)
    pieces: list[str] = []
    streaming = moment != "waiting for the answer"
    provider = backend.provider()
    assert isinstance(provider, AsyncProvider)

    async def scenario() -> asyncio.Task[ModelResponse]:
        task = asyncio.create_task(
            provider.acomplete(ask(backend, on_delta=pieces.append if streaming else None))
        )
        started = (
            (lambda: bool(pieces)) if moment == "mid-stream" else (lambda: len(backend.server.requests) == 1)
        )
        await _until(started, "the call is under way")
        # When the awaiting task is cancelled
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Then the server sees the connection close, long before its answer was due
        await _until(lambda: backend.server.disconnects == 1, "the server saw the disconnect")
        await provider.aclose()  # type: ignore[attr-defined]
        return task

    task = asyncio.run(scenario())
    assert task.cancelled()  # the CancelledError itself came out, not a ProviderError


def test_a_second_event_loop_gets_its_own_client(backend: Backend) -> None:
    # Given a provider that answered on one loop, which then ended without closing anything
    backend.server.enqueue(backend.text("one"), backend.text("two"))
    provider = backend.provider()
    assert isinstance(provider, AsyncProvider)
    first = asyncio.run(provider.acomplete(ask(backend)))

    # When it is used on a new loop, then from a loop in another thread
    second = asyncio.run(provider.acomplete(ask(backend)))
    backend.server.enqueue(backend.text("three"))
    answers: list[ModelResponse] = []
    thread = threading.Thread(target=lambda: answers.append(asyncio.run(provider.acomplete(ask(backend)))))
    thread.start()
    thread.join(timeout=BOUND_S)

    # Then each call worked (a client of the ended loop would fail with "Event loop is closed")
    assert [first.content, second.content, answers[0].content] == ["one", "two", "three"]


def test_many_calls_on_one_loop_wait_together(backend: Backend) -> None:
    # Given a server that answers each request after 0.5 s: 200 calls to the fast fake (100 s in turn), 60 to
    # the threaded one, which serves each waiting request on a thread of the test process (30 s in turn)
    calls, delay_s = (200, 0.5) if backend.name == "openai" else (60, 0.5)
    if backend.name == "openai":
        fast = FastOpenAIServer(delay_s=delay_s)
        base_url: str | None = fast.__enter__().base_url
    else:
        fast, base_url = None, None
        backend.server.enqueue(*(backend.text("done", delay_s=delay_s) for _ in range(calls)))
    try:
        provider = backend.provider(timeout_s=BOUND_S, base_url=base_url)
        assert isinstance(provider, AsyncProvider)

        async def all_at_once() -> list[ModelResponse]:
            try:
                async with asyncio.timeout(BOUND_S):  # a generous bound, not a measurement
                    return await asyncio.gather(*(provider.acomplete(ask(backend)) for _ in range(calls)))
            finally:
                await provider.aclose()  # type: ignore[attr-defined]

        # When they are all made at once on one loop
        answers = asyncio.run(all_at_once())

        # Then all of them are answered, each by its own request
        assert [answer.content for answer in answers] == ["done"] * calls
        served = fast.stats().requests if fast is not None else len(backend.server.requests)
        assert served == calls
    finally:
        if fast is not None:
            fast.__exit__(None, None, None)


class BlockingOnly:
    """A custom provider with ``complete`` only."""

    name = "blocking"

    def __init__(self) -> None:
        self.threads: list[str] = []

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.threads.append(threading.current_thread().name)
        return ModelResponse("blocking", (), Usage(), request.model, "stop")


class Both(BlockingOnly):
    """A provider with ``complete`` and ``acomplete``."""

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        self.threads.append(threading.current_thread().name)
        return ModelResponse("async", (), Usage(), request.model, "stop")


def test_call_provider_awaits_acomplete_on_the_loop_and_runs_complete_in_a_thread() -> None:
    blocking, both = BlockingOnly(), Both()
    request = ModelRequest("m", None, (ChatMessage(role="user", content="hi"),), (), None, None)
    assert isinstance(blocking, Provider) and not isinstance(blocking, AsyncProvider)
    assert isinstance(both, AsyncProvider)

    async def scenario() -> tuple[str, ModelResponse, ModelResponse]:
        loop_thread = threading.current_thread().name
        return loop_thread, await call_provider(blocking, request), await call_provider(both, request)

    loop_thread, from_thread, from_loop = asyncio.run(scenario())

    assert (from_thread.content, from_loop.content) == ("blocking", "async")
    assert blocking.threads != [loop_thread] and len(blocking.threads) == 1
    assert both.threads == [loop_thread]
