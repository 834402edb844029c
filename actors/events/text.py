"""One readable line per event, for ``agentq events`` and the demo."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from actors.events.model import Event

__all__ = ["describe", "event_line"]

#: Most characters of a text (answer, tool result, error) shown on a line.
SHOWN_CHARS = 120


def _short(value: Any, limit: int = SHOWN_CHARS) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _queued(data: Mapping[str, Any]) -> str:
    parts = [f"priority {data.get('priority', '?')}"]
    if data.get("delay_ms"):
        parts.append(f"delay {data['delay_ms']} ms")
    if data.get("by"):
        parts.append(f"by {data['by']}")
    return ", ".join(parts)


def _running(data: Mapping[str, Any]) -> str:
    return f"attempt {data.get('attempt', '?')}, run {str(data.get('run_id', '?'))[:8]}"


def _llm_started(data: Mapping[str, Any]) -> str:
    text = f"{data.get('provider', '?')}/{data.get('model', '?')}"
    if "messages" in data:
        text += f", {data['messages']} message(s)"
    if data.get("stream"):
        text += ", streaming"
    return text


def _llm_delta(data: Mapping[str, Any]) -> str:
    return repr(data["text"]) if "text" in data else f"{data.get('chars', 0)} characters"


def _llm_completed(data: Mapping[str, Any]) -> str:
    head = str(data.get("model", "?"))
    if data.get("error"):
        return f"{head}: error: {_short(data['error'])}"
    cost = data.get("cost_usd")
    parts = [
        f"{data.get('input_tokens', 0)} in / {data.get('output_tokens', 0)} out tokens",
        "cost unknown" if cost is None else f"${cost}",
    ]
    if "latency_ms" in data:
        parts.append(f"{data['latency_ms']} ms")
    text = f"{head}: {', '.join(parts)}"
    if data.get("tool_calls"):
        text += f" -> {', '.join(map(str, data['tool_calls']))}"
    elif data.get("content"):
        text += f": {_short(data['content'])}"
    return text


def _tool_started(data: Mapping[str, Any]) -> str:
    name = str(data.get("name", "?"))
    return f"{name}({_short(data['arguments'])})" if "arguments" in data else name


def _tool_completed(data: Mapping[str, Any]) -> str:
    text = str(data.get("name", "?"))
    if data.get("error"):
        text += f": error: {_short(data['error'])}"
    elif "result" in data:
        text += f" -> {_short(data['result'])}"
    if data.get("is_error") and not data.get("error"):
        text += " (tool error)"
    if "latency_ms" in data:
        text += f" ({data['latency_ms']} ms)"
    return text


def _retrying(data: Mapping[str, Any]) -> str:
    why = "stalled" if data.get("reason") == "stalled" else f"failed: {_short(data.get('error') or '?')}"
    text = f"attempt {data.get('attempt', '?')} {why}"
    if data.get("delay_ms") is not None:
        text += f"; next attempt in {data['delay_ms']} ms"
    return text


def _postponed(data: Mapping[str, Any]) -> str:
    text = f"for {data['delay_ms']} ms" if data.get("delay_ms") is not None else "postponed"
    return f"{text}: {_short(data['reason'])}" if data.get("reason") else text


def _completed(data: Mapping[str, Any]) -> str:
    if data.get("output") is not None:
        return _short(data["output"])
    return f"{data.get('input_tokens', 0)} in / {data.get('output_tokens', 0)} out tokens"


_SUMMARIES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "queued": _queued,
    "running": _running,
    "llm_started": _llm_started,
    "llm_delta": _llm_delta,
    "llm_completed": _llm_completed,
    "tool_started": _tool_started,
    "tool_completed": _tool_completed,
    "retrying": _retrying,
    "postponed": _postponed,
    "completed": _completed,
    "failed": lambda data: _short(data.get("error") or ""),
    "cancelled": lambda data: "",
}


def describe(event: Event) -> str:
    """What happened, in a few words (``gpt-4o-mini: 10 in / 5 out tokens, $0.000005, 230 ms``)."""
    summary = _SUMMARIES.get(event.type)
    try:
        text = summary(event.data) if summary is not None else _short(event.data)
    except (KeyError, TypeError, ValueError):
        text = _short(event.data)
    return f"{text} (replayed)" if event.data.get("replayed") else text


def event_line(event: Event) -> str:
    """``<at>  <id>  <type>  <what happened>``."""
    return f"{event.at}  {event.id:<16}  {event.type:<14}  {describe(event)}".rstrip()
