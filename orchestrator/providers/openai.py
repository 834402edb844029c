"""The ``openai`` provider: Chat Completions through the official ``openai`` SDK.

Works with any OpenAI-compatible server through ``base_url`` (settings or per agent).
Tools are sent as ``{"type": "function", "function": {name, description, parameters}}``;
tool calls come back in ``message.tool_calls[].function`` with JSON-string arguments. A
call whose arguments are not a JSON object is never executed: the model receives an error
result for it. Tool results go back as ``{"role": "tool", "tool_call_id", "content"}``.
The output limit is sent as ``max_completion_tokens``. The SDK's own retries are off
(``max_retries=0``): the task queue owns retries. The answer's ``x-ratelimit-*`` headers are read
(:mod:`orchestrator.providers.rate_headers`) for the model-call limiter, streamed or not.

Streaming (a request with ``on_delta``): ``create(stream=True, stream_options={"include_usage": True})``;
each chunk's ``delta.content`` goes to ``on_delta`` as it arrives, tool-call fragments are joined by
``index``, and the usage of the last chunk is kept, so the :class:`ModelResponse` is the one the same
answer gives without streaming. An error the server sends inside the stream, a connection that breaks
off and an answer that takes longer than the call's timeout raise the same errors as a plain call.

``acomplete`` makes the same call on the running event loop through ``openai.AsyncOpenAI``, with the
same request, answer, stream handling and errors; its clients are leased per call, per loop and base
URL (:mod:`orchestrator.providers._async_clients`). Cancelling the awaiting task closes the
connection and raises ``asyncio.CancelledError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2
import openai

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

__all__ = ["DEFAULT_OPENAI_BASE_URL", "OpenAIProvider", "to_openai_messages"]

#: The public API, used when neither the settings nor the agent give a base URL.
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


def _tool_call_param(call: ToolCall) -> dict[str, Any]:
    arguments = call.raw_arguments if call.raw_arguments is not None else json.dumps(call.arguments)
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def to_openai_messages(system_prompt: str | None, messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    """Render a conversation as Chat Completions messages."""
    rendered: list[dict[str, Any]] = []
    if system_prompt:
        rendered.append({"role": "system", "content": system_prompt})
    for message in messages:
        if message.role == "tool":
            rendered.append(
                {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
            )
        elif message.role == "assistant" and message.tool_calls:
            rendered.append(
                {
                    "role": "assistant",
                    "content": message.content or None,
                    "tool_calls": [_tool_call_param(call) for call in message.tool_calls],
                }
            )
        else:
            rendered.append({"role": message.role, "content": message.content})
    return rendered


def _tool_call(raw: Any) -> ToolCall:
    function = getattr(raw, "function", None)
    if function is None:  # a "custom" tool call; we only declare function tools
        name = str(getattr(getattr(raw, "custom", None), "name", "unknown"))
        return ToolCall(
            raw.id, name, {}, raw_arguments="", argument_error="only function tools are supported"
        )
    return _function_call(raw.id, function.name, function.arguments or "")


def _function_call(call_id: str, name: str, text: str) -> ToolCall:
    """A function tool call from its JSON-string arguments (never executed when they are not an object)."""
    try:
        arguments = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        return ToolCall(call_id, name, {}, raw_arguments=text, argument_error=f"not valid JSON ({exc})")
    if not isinstance(arguments, dict):
        error = f"expected a JSON object, got {type(arguments).__name__}"
        return ToolCall(call_id, name, {}, raw_arguments=text, argument_error=error)
    return ToolCall(call_id, name, arguments)


@dataclass
class _StreamedCall:
    """A tool call assembled from stream fragments."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _StreamedAnswer:
    """A Chat Completions answer assembled from its stream chunks."""

    model: str = ""
    content: list[str] = field(default_factory=list)
    calls: dict[int, _StreamedCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Any = None
    choices: int = 0

    def add(self, chunk: Any, on_delta: Callable[[str], None]) -> None:
        """Take one chunk; its text goes to ``on_delta`` at once."""
        self.model = chunk.model or self.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue
            self.choices += 1
            delta = choice.delta
            if delta is not None and delta.content:
                self.content.append(delta.content)
                on_delta(delta.content)
            for fragment in (delta.tool_calls if delta is not None else None) or ():
                call = self.calls.setdefault(fragment.index, _StreamedCall())
                call.id = fragment.id or call.id
                function = fragment.function
                if function is not None:
                    call.name = function.name or call.name
                    if function.arguments:
                        call.arguments.append(function.arguments)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def response(self, requested_model: str) -> ModelResponse:
        calls = tuple(
            _function_call(call.id, call.name, "".join(call.arguments))
            for _, call in sorted(self.calls.items())
        )
        return ModelResponse(
            content="".join(self.content) if self.content else None,
            tool_calls=calls,
            usage=_usage(self.usage),
            model=self.model or requested_model,
            finish_reason=self.finish_reason or ("tool_calls" if calls else "stop"),
        )


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    prompt_details = getattr(raw, "prompt_tokens_details", None)
    completion_details = getattr(raw, "completion_tokens_details", None)
    return Usage(
        input_tokens=raw.prompt_tokens or 0,
        output_tokens=raw.completion_tokens or 0,
        cached_input_tokens=(getattr(prompt_details, "cached_tokens", None) or 0),
        reasoning_tokens=(getattr(completion_details, "reasoning_tokens", None) or 0),
    )


@dataclass(frozen=True)
class _Call:
    """One prepared Chat Completions call: where it goes, what it sends, how long it may take."""

    base_url: str
    params: dict[str, Any]
    timeout: float
    requested_model: str


class OpenAIProvider:
    """Chat Completions via the official SDK, blocking (``complete``) or on an event loop (``acomplete``).

    Both build the same request and read the same answer; only the client differs (``openai.OpenAI``
    per group of threads, ``openai.AsyncOpenAI`` leased per call on each event loop, each per base URL).

    Args:
        settings: API key, base URL and timeout.
        name: The name agents select it by (``"openai"`` unless an OpenAI-compatible alias).
    """

    def __init__(self, settings: ProviderSettings, *, name: str = "openai") -> None:
        """Create the provider; no client is built until the first call."""
        self.name = name
        self.settings = settings
        self._clients: ClientCache[openai.OpenAI] = ClientCache(self._build_client)
        self._async_clients: LoopClientCache[openai.AsyncOpenAI] = LoopClientCache(self._build_async_client)

    def _client_options(self, base_url: str) -> dict[str, Any]:
        return {
            "api_key": self.settings.api_key,
            "base_url": base_url,
            "timeout": self.settings.timeout_s,
            "max_retries": 0,
            "default_headers": dict(self.settings.default_headers) or None,
        }

    def _build_client(self, base_url: str) -> openai.OpenAI:
        return openai.OpenAI(**self._client_options(base_url))

    def _build_async_client(self, base_url: str) -> openai.AsyncOpenAI:
        http_client = openai.DefaultAsyncHttpxClient(
            limits=ASYNC_CONNECTION_LIMITS, timeout=self.settings.timeout_s, verify=shared_ssl_context()
        )
        return openai.AsyncOpenAI(**self._client_options(base_url), http_client=http_client)

    def _prepare(self, request: ModelRequest) -> _Call:
        """The call ``request`` asks for.

        Raises:
            ProviderNotConfigured: No API key in the settings.
        """
        if not self.settings.api_key:
            raise ProviderNotConfigured(self.name, self.settings.api_key_variable or "OPENAI_API_KEY")
        params: dict[str, Any] = {
            "model": request.model,
            "messages": to_openai_messages(request.system_prompt, request.messages),
        }
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.max_tokens is not None:
            params["max_completion_tokens"] = request.max_tokens
        timeout = self.settings.timeout_s
        if request.timeout_s is not None:
            timeout = min(timeout, request.timeout_s)
        base_url = request.base_url or self.settings.base_url or DEFAULT_OPENAI_BASE_URL
        return _Call(base_url, params, timeout, request.model)

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Run one Chat Completions call.

        Raises:
            ProviderNotConfigured: No API key in the settings.
            ProviderError: The call failed; see :mod:`orchestrator.providers._http` for the classes.
        """
        call = self._prepare(request)
        client = self._clients.get(call.base_url)
        if request.on_delta is not None:
            return self._stream(client, call, request.on_delta)
        with self._translated(call.timeout):
            raw = client.chat.completions.with_raw_response.create(**call.params, timeout=call.timeout)
            completion = raw.parse()
        return self._response(completion, call.requested_model, raw.headers)

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        """Run one Chat Completions call on the running event loop; see :meth:`complete`.

        Cancelling the awaiting task closes the request's connection and raises
        :class:`asyncio.CancelledError`.
        """
        call = self._prepare(request)
        with self._async_clients.lease(call.base_url) as client:
            if request.on_delta is not None:
                return await self._astream(client, call, request.on_delta)
            with self._translated(call.timeout):
                raw = await client.chat.completions.with_raw_response.create(
                    **call.params, timeout=call.timeout
                )
                completion = raw.parse()
        return self._response(completion, call.requested_model, raw.headers)

    async def aclose(self) -> None:
        """Close the running event loop's clients (their connections); call before the loop ends."""
        await self._async_clients.aclose()

    def _stream(self, client: openai.OpenAI, call: _Call, on_delta: Callable[[str], None]) -> ModelResponse:
        """One streamed Chat Completions call (see the module docstring)."""
        deadline = StreamDeadline(self.name, call.timeout)
        answer = _StreamedAnswer()
        with self._translated(call.timeout):
            stream = client.chat.completions.create(
                **call.params, stream=True, stream_options={"include_usage": True}, timeout=call.timeout
            )
            headers = stream.response.headers
            with stream:
                for chunk in stream:
                    answer.add(chunk, on_delta)
                    deadline.check()
        return self._streamed(answer, call.requested_model, headers)

    async def _astream(
        self, client: openai.AsyncOpenAI, call: _Call, on_delta: Callable[[str], None]
    ) -> ModelResponse:
        """:meth:`_stream` on the running event loop."""
        deadline = StreamDeadline(self.name, call.timeout)
        answer = _StreamedAnswer()
        with self._translated(call.timeout):
            stream = await client.chat.completions.create(
                **call.params, stream=True, stream_options={"include_usage": True}, timeout=call.timeout
            )
            headers = stream.response.headers
            async with stream:
                async for chunk in stream:
                    answer.add(chunk, on_delta)
                    deadline.check()
        return self._streamed(answer, call.requested_model, headers)

    def _streamed(self, answer: _StreamedAnswer, requested_model: str, headers: Any) -> ModelResponse:
        """The response of a whole stream; an error when it never gave an answer or never finished."""
        if not answer.choices:
            raise ProviderUnavailable(f"{self.name}: the answer had no choices", provider=self.name)
        if answer.finish_reason is None:
            raise ProviderUnavailable(
                f"{self.name}: the answer stream ended before the model finished", provider=self.name
            )
        return replace(answer.response(requested_model), rate_limits=rate_limit_report(headers))

    @contextmanager
    def _translated(self, timeout: float) -> Iterator[None]:
        """Raise the SDK's and the transport's errors as :class:`ProviderError`; anything else
        (``asyncio.CancelledError`` included) passes through untouched."""
        try:
            yield
        except openai.OpenAIError as exc:
            raise self._translate(exc, timeout) from exc
        except httpx2.HTTPError as exc:
            raise transport_error(self.name, exc, timeout, self.settings.api_key) from exc

    def _response(self, completion: Any, requested_model: str, headers: Any) -> ModelResponse:
        if not getattr(completion, "choices", None):
            raise ProviderUnavailable(f"{self.name}: the answer had no choices", provider=self.name)
        choice = completion.choices[0]
        message = choice.message
        calls = tuple(_tool_call(raw) for raw in (message.tool_calls or ()))
        return ModelResponse(
            content=message.content,
            tool_calls=calls,
            usage=_usage(completion.usage),
            model=completion.model or requested_model,
            finish_reason=choice.finish_reason or ("tool_calls" if calls else "stop"),
            rate_limits=rate_limit_report(headers),
        )

    def _translate(self, exc: openai.OpenAIError, timeout: float) -> ProviderError:
        key = self.settings.api_key
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeout(
                f"{self.name}: no answer within {timeout:g} s", provider=self.name, timeout_s=timeout
            )
        if isinstance(exc, openai.APIConnectionError):
            return ProviderUnavailable(
                f"{self.name}: connection failed: {redact(str(exc), key)}", provider=self.name
            )
        if isinstance(exc, openai.APIStatusError):
            message = redact(error_message(exc.body, exc.message), key)
            return classify_status(
                self.name, exc.status_code, message, dict(exc.response.headers), error_code(exc.body)
            )
        if isinstance(exc, openai.APIError):  # e.g. an answer that does not match the schema
            return ProviderError(f"{self.name}: {redact(str(exc), key)}", retryable=True, provider=self.name)
        return ProviderError(f"{self.name}: {redact(str(exc), key)}", retryable=False, provider=self.name)
