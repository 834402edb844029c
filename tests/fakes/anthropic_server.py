"""A fake Anthropic Messages server: ``POST /v1/messages``.

Point the real SDK at :attr:`FakeAnthropicServer.base_url` (``http://127.0.0.1:PORT``; the
SDK appends ``/v1/messages`` itself)::

    with FakeAnthropicServer() as server:
        server.enqueue(anthropic_tool_uses(("calculate", {"expression": "2+3"})), anthropic_text("5"))

A request with ``"stream": true`` gets the same message as Messages stream events:
``message_start`` (with the input usage), a ``ping``, per content block ``content_block_start``,
``text_delta``s (or ``input_json_delta``s) a few characters at a time and ``content_block_stop``,
then ``message_delta`` (stop reason, output tokens) and ``message_stop``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tests.fakes.http_server import FakeReply, FakeServer, RecordedRequest, sse_event

__all__ = [
    "FakeAnthropicServer",
    "FakeReply",
    "RecordedRequest",
    "anthropic_error",
    "anthropic_stream_events",
    "anthropic_text",
    "anthropic_tool_uses",
]

_counter = iter(range(1, 1_000_000))


def _message(
    content: list[dict[str, Any]], stop_reason: str, model: str, usage: Mapping[str, int]
) -> dict[str, Any]:
    return {
        "id": f"msg_{next(_counter)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": dict(usage),
    }


def _usage(input_tokens: int, output_tokens: int, cache_read: int, cache_creation: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_creation,
    }


def anthropic_text(
    text: str,
    *,
    model: str = "claude-haiku-4-5-20251001",
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_read_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
    delay_s: float = 0.0,
) -> FakeReply:
    """A final text answer."""
    usage = _usage(input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens)
    return FakeReply(_message([{"type": "text", "text": text}], "end_turn", model, usage), delay_s=delay_s)


def anthropic_tool_uses(
    *calls: tuple[str, Mapping[str, Any]],
    text: str | None = None,
    model: str = "claude-haiku-4-5-20251001",
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_read_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
) -> FakeReply:
    """``tool_use`` blocks in one turn, optionally after a text block."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [
        {"type": "tool_use", "id": f"toolu_{next(_counter)}", "name": name, "input": dict(args)}
        for name, args in calls
    ]
    usage = _usage(input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens)
    return FakeReply(_message(content, "tool_use", model, usage))


def anthropic_error(
    status: int, message: str, *, type: str = "api_error", headers: Mapping[str, str] | None = None
) -> FakeReply:
    """An HTTP error with Anthropic's JSON error body."""
    body = {"type": "error", "error": {"type": type, "message": message}}
    return FakeReply(body, status=status, headers=dict(headers or {}))


#: Characters of text (and of tool input JSON) per streamed delta.
STREAM_PIECE = 4


def _pieces(text: str) -> list[str]:
    return [text[start : start + STREAM_PIECE] for start in range(0, len(text), STREAM_PIECE)]


def _block_events(index: int, block: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if block["type"] == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"])]
    else:
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        deltas = [
            {"type": "input_json_delta", "partial_json": piece}
            for piece in _pieces(json.dumps(block["input"]))
        ]
    return [
        ("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}),
        *(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def anthropic_stream_events(message: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The ``(event, data)`` pairs that stream ``message`` (a non-streamed answer's JSON)."""
    usage = dict(message["usage"])
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        events += _block_events(index, block)
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


class FakeAnthropicServer(FakeServer):
    """A :class:`FakeServer` whose ``base_url`` is what the Anthropic SDK expects."""

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return self.url

    def stream_events(self, body: Mapping[str, Any], request: Any) -> list[bytes]:
        """``body`` as Messages stream events."""
        return [sse_event(data, event) for event, data in anthropic_stream_events(body)]
