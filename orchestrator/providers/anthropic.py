"""The ``anthropic`` provider: the Messages API through the official ``anthropic`` SDK.

The system prompt goes in ``system=``; tools as ``{name, description, input_schema}``;
``tool_use`` content blocks become tool calls; tool results go back as one user message
of ``tool_result`` blocks ``{tool_use_id, content, is_error}``. ``max_tokens`` is required
by the API: the agent's, else the settings' ``default_max_tokens`` (4096). Usage counts
cache reads and cache writes as input tokens (Anthropic reports them apart from
``input_tokens``), so input totals mean the same for every provider. The SDK's own retries
are off (``max_retries=0``): the task queue owns retries. The answer's ``anthropic-ratelimit-*``
headers are read (:mod:`orchestrator.providers.rate_headers`) for the model-call limiter, streamed or not.

Streaming (a request with ``on_delta``): ``messages.stream(...)``; each ``text_delta`` goes to
``on_delta`` as it arrives and the SDK's final message gives the same :class:`ModelResponse` as a
plain call. An ``error`` event inside the stream, a connection that breaks off and an answer that takes
longer than the call's timeout raise the same errors as a plain call.

``acomplete`` makes the same call on the running event loop through ``anthropic.AsyncAnthropic``, with the
same request, answer, stream handling and errors; its clients are leased per call, per loop and base
URL (:mod:`orchestrator.providers._async_clients`). Cancelling the awaiting task closes the
connection and raises ``asyncio.CancelledError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2

from orchestrator.errors import ProviderError, ProviderNotConfigured, ProviderTimeout, ProviderUnavailable
from orchestrator.messages import ChatMessage, ModelRequest, ModelResponse, ToolCall, Usage
from orchestrator.providers._async_clients import ASYNC_CONNECTION_LIMITS, LoopClientCache, shared_ssl_context
from orchestrator.providers._http import (
    ClientCache,
    StreamDeadline,
    classify_status,
    error_code,
    error_message,
    redact,
    transport_error,
)
from orchestrator.providers.rate_headers import rate_limit_report
from orchestrator.providers.settings import ProviderSettings

__all__ = ["DEFAULT_ANTHROPIC_BASE_URL", "AnthropicProvider", "to_anthropic_messages"]

#: The public API (the SDK appends ``/v1/messages``), used when no base URL is given.
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
#: The HTTP status each of Anthropic's error types stands for, for an ``error`` event that arrives inside
#: a stream (the response's own status is then 200); an unknown type counts as a server error (retryable).
STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def _assistant_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
    return blocks


def to_anthropic_messages(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    """Render a conversation as Messages API messages; consecutive tool results share one user message."""
    rendered: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.content,
                "is_error": message.is_error,
            }
            previous = rendered[-1] if rendered else None
            if previous is not None and previous["role"] == "user" and isinstance(previous["content"], list):
                previous["content"].append(block)
            else:
                rendered.append({"role": "user", "content": [block]})
        elif message.role == "assistant":
            rendered.append({"role": "assistant", "content": _assistant_blocks(message) or message.content})
        elif message.role == "user":
            rendered.append({"role": "user", "content": message.content})
        # "system" messages are carried by ``system=``, never in the list.
    return rendered


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    cache_read = getattr(raw, "cache_read_input_tokens", None) or 0
    cache_write = getattr(raw, "cache_creation_input_tokens", None) or 0
    details = getattr(raw, "output_tokens_details", None)
    return Usage(
        input_tokens=(raw.input_tokens or 0) + cache_read + cache_write,
        output_tokens=raw.output_tokens or 0,
        cached_input_tokens=cache_read,
        cache_creation_input_tokens=cache_write,
        reasoning_tokens=getattr(details, "thinking_tokens", None) or 0,
    )


def _tool_call(block: Any) -> ToolCall:
    arguments = block.input
    if not isinstance(arguments, dict):
        error = f"expected a JSON object, got {type(arguments).__name__}"
        return ToolCall(block.id, block.name, {}, argument_error=error)
    return ToolCall(block.id, block.name, dict(arguments))


@dataclass(frozen=True)
class _Call:
    """One prepared Messages call: where it goes, what it sends, how long it may take."""

    base_url: str
    params: dict[str, Any]
    timeout: float
    requested_model: str


class _StreamWatch:
    """Reads a Messages stream's events: text deltas to ``on_delta``, the end, the whole-call deadline."""

    def __init__(self, provider: str, timeout: float, on_delta: Callable[[str], None]) -> None:
        self.provider = provider
        self.on_delta = on_delta
        self.deadline = StreamDeadline(provider, timeout)
        self.finished = False

    def see(self, event: Any) -> None:
        """Take one event; raises :class:`ProviderTimeout` once the call's time is up."""
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            self.on_delta(event.delta.text)
        elif event.type == "message_stop":
            self.finished = True
        self.deadline.check()

    def ended(self) -> None:
        """The stream is over: an error unless the model finished."""
        if not self.finished:
            raise ProviderUnavailable(
                f"{self.provider}: the answer stream ended before the model finished", provider=self.provider
            )


class AnthropicProvider:
    """The Messages API via the official SDK, blocking (``complete``) or on an event loop (``acomplete``).

    Both build the same request and read the same answer; only the client differs (``anthropic.Anthropic``
    per group of threads, ``anthropic.AsyncAnthropic`` leased per call on each event loop, each per base URL).

    Args:
        settings: API key, base URL (without ``/v1``) and timeout.
        name: The name agents select it by.
    """

    def __init__(self, settings: ProviderSettings, *, name: str = "anthropic") -> None:
        """Create the provider; no client is built until the first call."""
        self.name = name
        self.settings = settings
        self._clients: ClientCache[anthropic.Anthropic] = ClientCache(self._build_client)
        self._async_clients: LoopClientCache[anthropic.AsyncAnthropic] = LoopClientCache(
            self._build_async_client
        )

    def _client_options(self, base_url: str) -> dict[str, Any]:
        return {
            "api_key": self.settings.api_key,
            "base_url": base_url,
            "timeout": self.settings.timeout_s,
            "max_retries": 0,
            "default_headers": dict(self.settings.default_headers) or None,
        }

    def _build_client(self, base_url: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(**self._client_options(base_url))

    def _build_async_client(self, base_url: str) -> anthropic.AsyncAnthropic:
        http_client = anthropic.DefaultAsyncHttpxClient(
            limits=ASYNC_CONNECTION_LIMITS, timeout=self.settings.timeout_s, verify=shared_ssl_context()
        )
        return anthropic.AsyncAnthropic(**self._client_options(base_url), http_client=http_client)

    def _prepare(self, request: ModelRequest) -> _Call:
        """The call ``request`` asks for.

        Raises:
            ProviderNotConfigured: No API key in the settings.
        """
        if not self.settings.api_key:
            raise ProviderNotConfigured(self.name, self.settings.api_key_variable or "ANTHROPIC_API_KEY")
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or self.settings.default_max_tokens,
            "messages": to_anthropic_messages(request.messages),
        }
        if request.system_prompt:
            params["system"] = request.system_prompt
        if request.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        if request.temperature is not None:
            # The SDK (1.x) dropped the keyword (newer models reject a sampling temperature); the API still
            # takes it on models that support one, so it goes in the body, where such a model answers 400.
            params["extra_body"] = {"temperature": request.temperature}
        timeout = self.settings.timeout_s
        if request.timeout_s is not None:
            timeout = min(timeout, request.timeout_s)
        base_url = request.base_url or self.settings.base_url or DEFAULT_ANTHROPIC_BASE_URL
        return _Call(base_url, params, timeout, request.model)

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Run one Messages API call.

        Raises:
            ProviderNotConfigured: No API key in the settings.
            ProviderError: The call failed; see :mod:`orchestrator.providers._http` for the classes.
        """
        call = self._prepare(request)
        client = self._clients.get(call.base_url)
        if request.on_delta is not None:
            return self._stream(client, call, request.on_delta)
        with self._translated(call.timeout):
            raw = client.messages.with_raw_response.create(**call.params, timeout=call.timeout)
            message = raw.parse()
        return self._response(message, call.requested_model, raw.headers)

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        """Run one Messages API call on the running event loop; see :meth:`complete`.

        Cancelling the awaiting task closes the request's connection and raises
        :class:`asyncio.CancelledError`.
        """
        call = self._prepare(request)
        with self._async_clients.lease(call.base_url) as client:
            if request.on_delta is not None:
                return await self._astream(client, call, request.on_delta)
            with self._translated(call.timeout):
                raw = await client.messages.with_raw_response.create(**call.params, timeout=call.timeout)
                message = await raw.parse()
        return self._response(message, call.requested_model, raw.headers)

    async def aclose(self) -> None:
        """Close the running event loop's clients (their connections); call before the loop ends."""
        await self._async_clients.aclose()

    def _stream(
        self, client: anthropic.Anthropic, call: _Call, on_delta: Callable[[str], None]
    ) -> ModelResponse:
        """One streamed Messages call (see the module docstring)."""
        watch = _StreamWatch(self.name, call.timeout, on_delta)
        translated = self._translated(call.timeout, streaming=True)
        with translated, client.messages.stream(**call.params, timeout=call.timeout) as stream:
            headers = stream.response.headers
            for event in stream:
                watch.see(event)
            watch.ended()
            message = stream.get_final_message()
        return self._response(message, call.requested_model, headers)

    async def _astream(
        self, client: anthropic.AsyncAnthropic, call: _Call, on_delta: Callable[[str], None]
    ) -> ModelResponse:
        """:meth:`_stream` on the running event loop."""
        watch = _StreamWatch(self.name, call.timeout, on_delta)
        with self._translated(call.timeout, streaming=True):
            async with client.messages.stream(**call.params, timeout=call.timeout) as stream:
                headers = stream.response.headers
                async for event in stream:
                    watch.see(event)
                watch.ended()
                message = await stream.get_final_message()
        return self._response(message, call.requested_model, headers)

    @contextmanager
    def _translated(self, timeout: float, *, streaming: bool = False) -> Iterator[None]:
        """Raise the SDK's and the transport's errors as :class:`ProviderError`; anything else
        (``asyncio.CancelledError`` included) passes through untouched."""
        try:
            yield
        except anthropic.AnthropicError as exc:
            raise self._translate(exc, timeout) from exc
        except httpx2.HTTPError as exc:
            raise transport_error(self.name, exc, timeout, self.settings.api_key) from exc
        except ValueError as exc:  # the SDK's: tool arguments streamed as JSON it cannot parse
            if not streaming:
                raise
            raise ProviderError(
                f"{self.name}: unreadable answer stream: {redact(str(exc), self.settings.api_key)}",
                retryable=True,
                provider=self.name,
            ) from exc

    @staticmethod
    def _response(message: Any, requested_model: str, headers: Any) -> ModelResponse:
        texts = [block.text for block in message.content if getattr(block, "type", None) == "text"]
        calls = tuple(
            _tool_call(block) for block in message.content if getattr(block, "type", None) == "tool_use"
        )
        return ModelResponse(
            content="".join(texts) if texts else None,
            tool_calls=calls,
            usage=_usage(message.usage),
            model=message.model or requested_model,
            finish_reason=message.stop_reason or ("tool_use" if calls else "end_turn"),
            rate_limits=rate_limit_report(headers),
        )

    def _translate(self, exc: anthropic.AnthropicError, timeout: float) -> ProviderError:
        key = self.settings.api_key
        if isinstance(exc, anthropic.APITimeoutError):
            return ProviderTimeout(
                f"{self.name}: no answer within {timeout:g} s", provider=self.name, timeout_s=timeout
            )
        if isinstance(exc, anthropic.APIConnectionError):
            return ProviderUnavailable(
                f"{self.name}: connection failed: {redact(str(exc), key)}", provider=self.name
            )
        if isinstance(exc, anthropic.APIStatusError):
            message = redact(error_message(exc.body, exc.message), key)
            code = error_code(exc.body)
            status = exc.status_code
            if status < 400:  # an ``error`` event inside a stream whose response began with 200
                status = STREAM_ERROR_STATUS.get(code or "", 500)
            return classify_status(self.name, status, message, dict(exc.response.headers), code)
        if isinstance(exc, anthropic.APIError):
            return ProviderError(f"{self.name}: {redact(str(exc), key)}", retryable=True, provider=self.name)
        return ProviderError(f"{self.name}: {redact(str(exc), key)}", retryable=False, provider=self.name)
