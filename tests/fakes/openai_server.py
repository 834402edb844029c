"""A fake OpenAI Chat Completions server: ``POST /v1/chat/completions``.

Point the real SDK at :attr:`FakeOpenAIServer.base_url` (``http://127.0.0.1:PORT/v1``)::

    with FakeOpenAIServer() as server:
        server.enqueue(openai_tool_calls(("calculate", {"expression": "2+3"})), openai_text("5"))
        ...
        assert server.requests[1].body["messages"][-1]["role"] == "tool"

A request with ``"stream": true`` gets the same answer as ``chat.completion.chunk`` events: the role,
the text a few characters at a time, each tool call's id and name then its arguments in pieces, the
finish reason, the usage (with ``stream_options.include_usage``) and ``data: [DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tests.fakes.http_server import FakeReply, FakeServer, RecordedRequest, sse_event

__all__ = [
    "FakeOpenAIServer",
    "FakeReply",
    "RecordedRequest",
    "openai_error",
    "openai_stream_chunks",
    "openai_text",
    "openai_tool_calls",
]

_counter = iter(range(1, 1_000_000))


def _usage(prompt: int, completion: int, cached: int, reasoning: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _completion(
    message: dict[str, Any], finish_reason: str, model: str, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{next(_counter)}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage,
    }


def openai_text(
    content: str,
    *,
    model: str = "gpt-4o-mini-2024-07-18",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    delay_s: float = 0.0,
) -> FakeReply:
    """A final text answer."""
    message = {"role": "assistant", "content": content, "refusal": None}
    usage = _usage(prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens)
    return FakeReply(_completion(message, "stop", model, usage), delay_s=delay_s)


def openai_tool_calls(
    *calls: tuple[str, Mapping[str, Any] | str],
    model: str = "gpt-4o-mini-2024-07-18",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> FakeReply:
    """Tool calls in one turn: ``(name, arguments)``; a str is sent as the raw arguments text."""
    tool_calls = [
        {
            "id": f"call_{next(_counter)}",
            "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
        }
        for name, args in calls
    ]
    message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": tool_calls}
    usage = _usage(prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens)
    return FakeReply(_completion(message, "tool_calls", model, usage))


def openai_error(
    status: int,
    message: str,
    *,
    type: str = "server_error",
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> FakeReply:
    """An HTTP error with OpenAI's JSON error body."""
    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return FakeReply(body, status=status, headers=dict(headers or {}))


#: Characters of text (and of tool arguments) per streamed chunk.
STREAM_PIECE = 4


def _pieces(text: str) -> list[str]:
    return [text[start : start + STREAM_PIECE] for start in range(0, len(text), STREAM_PIECE)]


def openai_stream_chunks(
    completion: Mapping[str, Any], *, include_usage: bool = True
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects that stream ``completion`` (a non-streamed answer's JSON)."""
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    choice = completion["choices"][0]
    message = choice["message"]
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in _pieces(message.get("content") or "")]
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call["function"]
        head = {"index": index, "id": call["id"], "type": "function"}
        chunks.append(
            chunk({"tool_calls": [{**head, "function": {"name": function["name"], "arguments": ""}}]})
        )
        chunks += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in _pieces(function["arguments"])
        ]
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append({**base, "choices": [], "usage": completion["usage"]})
    return chunks


class FakeOpenAIServer(FakeServer):
    """A :class:`FakeServer` whose ``base_url`` is what the OpenAI SDK expects."""

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    def stream_events(self, body: Mapping[str, Any], request: Any) -> list[bytes]:
        """``body`` as Chat Completions stream events, ending with ``[DONE]``."""
        options = request.get("stream_options") or {}
        chunks = openai_stream_chunks(body, include_usage=bool(options.get("include_usage")))
        return [*(sse_event(chunk) for chunk in chunks), sse_event("[DONE]")]
