"""The ``scripted`` provider: deterministic, offline, no API key.

The script is read from the task's context, ``context["script"]``: a list of steps. The
step used for a call is the one at index = number of assistant messages already in the
conversation, so step 0 answers the first call, step 1 the second, and so on.

Step forms (exactly one of ``tool``, ``tools``, ``answer``, ``fail``)::

    {"tool": "calculate", "arguments": {"expression": "1+1"}}
    {"tools": [{"name": "calculate", "arguments": {...}}, {"name": ..., "arguments": {...}}]}
    {"answer": "the final answer"}
    {"fail": "rate limited", "retryable": true, "retry_after_ms": 500}

Any step may carry ``"sleep_ms": N`` (0 ≤ N ≤ 600000), slept before answering; an ``answer`` step
may carry ``"chunk_ms": N`` (0 ≤ N ≤ 10000), slept between the words of a streamed answer. Tool call
ids are ``call_<step index>_<call index>``. Past the end of the script (or with an empty
script) the answer is the last tool result, or ``"Completed: <task title>"`` when no tool
ran; with no script at all the provider answers ``"Completed: <task title>"`` at once.
The whole script is validated on every call, so a malformed step fails the run before
any tool runs. Usage is deterministic: input tokens = characters sent // 4, output tokens = characters
produced // 4, each at least 1. A streaming request (``on_delta``) gets the answer text word by word
(whitespace kept), then the same response. ``acomplete`` follows the same script on an event loop,
awaiting its sleeps instead of blocking a thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from config.errors import short_repr
from orchestrator.errors import ProviderError, ScriptedNotAllowed, ScriptError
from orchestrator.messages import ChatMessage, ModelRequest, ModelResponse, ToolCall, Usage

__all__ = ["MAX_SLEEP_MS", "DisabledScriptedProvider", "ScriptedProvider"]

#: Longest ``sleep_ms`` a step may ask for.
MAX_SLEEP_MS = 600_000
#: Longest ``chunk_ms`` an answer step may ask for.
MAX_CHUNK_MS = 10_000
#: A word and the whitespace after it: the pieces a streaming request receives.
_WORD = re.compile(r"\S+\s*|\s+")

_KINDS = ("tool", "tools", "answer", "fail")
_ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "tool": frozenset({"tool", "arguments", "sleep_ms"}),
    "tools": frozenset({"tools", "sleep_ms"}),
    "answer": frozenset({"answer", "sleep_ms", "chunk_ms"}),
    "fail": frozenset({"fail", "retryable", "retry_after_ms", "sleep_ms"}),
}


@dataclass(frozen=True)
class _Step:
    """A validated script step."""

    tool_calls: tuple[ToolCall, ...] = ()
    answer: str | None = None
    fail: str | None = None
    retryable: bool = True
    retry_after_ms: int | None = None
    sleep_ms: int = 0
    chunk_ms: int = 0


def _tool_call(index: int, position: int, name: object, arguments: object) -> ToolCall:
    where = f"script step {index}"
    if not isinstance(name, str) or not name:
        raise ScriptError(f"{where}: tool name must be a non-empty string, got {short_repr(name)}")
    if not isinstance(arguments, dict):
        raise ScriptError(
            f"{where}: arguments of tool {short_repr(name)} must be an object, got {short_repr(arguments)}"
        )
    return ToolCall(id=f"call_{index}_{position}", name=name, arguments=dict(arguments))


def _tool_calls(index: int, kind: str, step: Mapping[str, Any]) -> tuple[ToolCall, ...]:
    if kind == "tool":
        return (_tool_call(index, 0, step["tool"], step.get("arguments", {})),)
    calls = step["tools"]
    if not isinstance(calls, list) or not calls:
        raise ScriptError(f"script step {index}: 'tools' must be a non-empty list, got {short_repr(calls)}")
    result = []
    for position, call in enumerate(calls):
        if not isinstance(call, dict):
            raise ScriptError(
                f"script step {index}: tool call {position} must be an object, got {short_repr(call)}"
            )
        extra = set(call) - {"name", "arguments"}
        if extra:
            raise ScriptError(f"script step {index}: tool call {position} has unknown keys {sorted(extra)}")
        result.append(_tool_call(index, position, call.get("name"), call.get("arguments", {})))
    return tuple(result)


def _optional_int(index: int, step: Mapping[str, Any], key: str, default: int | None, top: int) -> int | None:
    value = step.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ScriptError(
            f"script step {index}: {short_repr(key)} must be an integer from 0 to {top},"
            f" got {short_repr(value)}"
        )
    return value


def _fail_step(index: int, step: Mapping[str, Any], sleep_ms: int) -> _Step:
    message, retryable = step["fail"], step.get("retryable", True)
    if not isinstance(message, str):
        raise ScriptError(f"script step {index}: 'fail' must be a string, got {short_repr(message)}")
    if not isinstance(retryable, bool):
        raise ScriptError(
            f"script step {index}: 'retryable' must be true or false, got {short_repr(retryable)}"
        )
    retry_after_ms = _optional_int(index, step, "retry_after_ms", None, 86_400_000)
    return _Step(fail=message, retryable=retryable, retry_after_ms=retry_after_ms, sleep_ms=sleep_ms)


def parse_step(index: int, step: object) -> _Step:
    """Validate one script step.

    Args:
        index: The step's position in the script, for error messages.
        step: The step as found in the task's context.

    Returns:
        The validated step.

    Raises:
        ScriptError: The step is malformed; the message names the index and the problem.
    """
    if not isinstance(step, dict):
        raise ScriptError(f"script step {index} must be an object, got {short_repr(step)}")
    kinds = [kind for kind in _KINDS if kind in step]
    if len(kinds) != 1:
        raise ScriptError(f"script step {index} must have exactly one of {list(_KINDS)}, got {sorted(step)}")
    kind = kinds[0]
    extra = set(step) - _ALLOWED_KEYS[kind]
    if extra:
        raise ScriptError(f"script step {index} ({short_repr(kind)}) has unknown keys {sorted(extra)}")
    sleep_ms = _optional_int(index, step, "sleep_ms", 0, MAX_SLEEP_MS) or 0
    if kind == "fail":
        return _fail_step(index, step, sleep_ms)
    if kind == "answer":
        if not isinstance(step["answer"], str):
            raise ScriptError(
                f"script step {index}: 'answer' must be a string, got {short_repr(step['answer'])}"
            )
        chunk_ms = _optional_int(index, step, "chunk_ms", 0, MAX_CHUNK_MS) or 0
        return _Step(answer=step["answer"], sleep_ms=sleep_ms, chunk_ms=chunk_ms)
    return _Step(tool_calls=_tool_calls(index, kind, step), sleep_ms=sleep_ms)


def _task_title(messages: Sequence[ChatMessage]) -> str:
    for message in messages:
        if message.role == "user":
            lines = message.content.strip().splitlines()
            return lines[0] if lines else "task"
    return "task"


def _fallback_answer(messages: Sequence[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "tool":
            return message.content
    return f"Completed: {_task_title(messages)}"


def _tokens(chars: int) -> int:
    return max(1, chars // 4)


#: What a script run yields: seconds to sleep before it goes on; it returns the response.
_ScriptRun = Generator[float, None, ModelResponse]


class ScriptedProvider:
    """A deterministic provider that follows a script from the task's context.

    ``complete`` sleeps with ``sleep``; ``acomplete`` answers the same way but awaits ``async_sleep``, so
    scripted delays hold no thread.

    Args:
        sleep: The function used for ``sleep_ms`` and ``chunk_ms`` (seconds); tests pass a fake.
        async_sleep: The coroutine function ``acomplete`` uses instead (seconds).
    """

    name = "scripted"

    def __init__(
        self,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Create the provider; see the class docstring."""
        self._sleep = sleep
        self._async_sleep = async_sleep

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer with the script step for this turn.

        Raises:
            ScriptError: The script or the current step is malformed.
            ProviderError: The step is a ``fail`` step.
        """
        run = self._run(request)
        while True:
            try:
                pause = next(run)
            except StopIteration as done:
                response: ModelResponse = done.value
                return response
            self._sleep(pause)

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        """:meth:`complete` on the running event loop, sleeping with ``async_sleep``."""
        run = self._run(request)
        while True:
            try:
                pause = next(run)
            except StopIteration as done:
                response: ModelResponse = done.value
                return response
            await self._async_sleep(pause)

    def _run(self, request: ModelRequest) -> _ScriptRun:
        """The step for this turn: yields each pause (seconds), returns the response."""
        turn = sum(1 for message in request.messages if message.role == "assistant")
        step = self._step(request.context, turn, request.messages)
        if step.sleep_ms:
            yield step.sleep_ms / 1000
        if step.fail is not None:
            raise ProviderError(
                f"scripted provider failed at step {turn}: {step.fail}",
                retryable=step.retryable,
                retry_after_ms=step.retry_after_ms,
            )
        sent = len(request.system_prompt or "") + sum(len(m.content) for m in request.messages)
        if step.tool_calls:
            produced = len(json.dumps([[c.name, c.arguments] for c in step.tool_calls], default=str))
            content, finish_reason = None, "tool_calls"
        else:
            content, finish_reason = step.answer or "", "stop"
            produced = len(content)
            if request.on_delta is not None:
                for index, piece in enumerate(_WORD.findall(content)):
                    if index and step.chunk_ms:
                        yield step.chunk_ms / 1000
                    request.on_delta(piece)
        return ModelResponse(
            content=content,
            tool_calls=step.tool_calls,
            usage=Usage(input_tokens=_tokens(sent), output_tokens=_tokens(produced)),
            model=request.model,
            finish_reason=finish_reason,
        )

    @staticmethod
    def _step(context: Mapping[str, Any], turn: int, messages: Sequence[ChatMessage]) -> _Step:
        script = context.get("script")
        if script is None:
            return _Step(answer=f"Completed: {_task_title(messages)}")
        if not isinstance(script, list | tuple):
            raise ScriptError(f"script must be a list of steps, got {type(script).__name__}")
        steps = [parse_step(index, step) for index, step in enumerate(script)]  # fail fast on any bad step
        if turn >= len(steps):
            return _Step(answer=_fallback_answer(messages))
        return steps[turn]


class DisabledScriptedProvider:
    """Stands in for ``scripted`` where it is not allowed: every call fails, not retryable."""

    name = "scripted"

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Refuse the call.

        Raises:
            ScriptedNotAllowed: Always; it says to set ``AGENTQ_ALLOW_SCRIPTED=true``.
        """
        raise ScriptedNotAllowed()

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        """Refuse the call, as :meth:`complete` does.

        Raises:
            ScriptedNotAllowed: Always.
        """
        raise ScriptedNotAllowed()
