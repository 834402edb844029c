"""Provider-neutral conversation types.

Providers translate these to and from their own wire formats, so the agent loop never
depends on a vendor SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: The roles a message can have.
Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolSpec:
    """What a model is told about a tool.

    Attributes:
        name: The tool's registered name.
        description: What the tool does, for the model.
        parameters: JSON schema of the tool's arguments.
    """

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """A tool call asked for by the model.

    Attributes:
        id: The call's id, echoed back in the tool result message.
        name: The tool to call.
        arguments: The arguments, not yet validated (empty when they could not be decoded).
        raw_arguments: The arguments exactly as the model sent them, when they were not a
            JSON object; echoed back to the provider unchanged.
        argument_error: Why the arguments could not be decoded; such a call is never
            executed, the model receives this as an error result.
    """

    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str | None = None
    argument_error: str | None = None


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation.

    Attributes:
        role: Who speaks.
        content: The text (for a tool message, the tool's result).
        tool_calls: Tool calls made by an assistant message.
        tool_call_id: For a tool message, the id of the call it answers.
        is_error: For a tool message, whether the result is an error.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False


@dataclass(frozen=True)
class Usage:
    """Token counts of one or more model calls.

    All counts are totals: ``cached_input_tokens`` and ``cache_creation_input_tokens`` are
    the parts of ``input_tokens`` read from or written to the provider's prompt cache, and
    ``reasoning_tokens`` the part of ``output_tokens`` spent on hidden reasoning.

    Attributes:
        input_tokens: Tokens sent to the model, cached ones included.
        output_tokens: Tokens produced by the model, reasoning included.
        cached_input_tokens: Input tokens read from the prompt cache (OpenAI
            ``prompt_tokens_details.cached_tokens``, Anthropic ``cache_read_input_tokens``).
        cache_creation_input_tokens: Input tokens written to the prompt cache (Anthropic
            ``cache_creation_input_tokens``; billed above the plain input price).
        reasoning_tokens: Output tokens spent on reasoning (OpenAI
            ``completion_tokens_details.reasoning_tokens``, Anthropic ``thinking_tokens``).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        """Sum two usages.

        Args:
            other: The usage to add.

        Returns:
            A new usage with both counts summed.
        """
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    def to_dict(self) -> dict[str, int]:
        """Return the usage as a JSON-friendly dict (every count, zeros included)."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


@dataclass(frozen=True)
class ModelRequest:
    """One call to a model.

    Attributes:
        model: The model name, as the provider knows it.
        system_prompt: The agent's system prompt, if any.
        messages: The conversation so far (without the system prompt).
        tools: The tools the model may call.
        temperature: Sampling temperature, or None for the provider default.
        max_tokens: Output token limit, or None for the provider default.
        context: The task's context (a scripted provider reads its script here).
        base_url: The agent's base URL override for this provider, or None for the
            provider's configured one.
        timeout_s: The longest this call may take, in seconds, or None for the provider's
            configured timeout (the loop passes the run's remaining time when it is shorter).
        on_delta: Called with each piece of answer text as the model streams it; None: no streaming.
            A provider that streams returns the same :class:`ModelResponse` as without streaming.
    """

    model: str
    system_prompt: str | None
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...]
    temperature: float | None
    max_tokens: int | None
    context: Mapping[str, Any] = field(default_factory=dict)
    base_url: str | None = None
    timeout_s: float | None = None
    on_delta: Callable[[str], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RateLimitReport:
    """What a provider's response headers said about its rate limits (OpenAI ``x-ratelimit-*``,
    Anthropic ``anthropic-ratelimit-*``); None where a header was absent or not a number.

    Attributes:
        requests_remaining: Requests the provider still accepts before ``requests_reset_ms``.
        requests_reset_ms: Milliseconds until the request limit is whole again.
        tokens_remaining: Tokens the provider still accepts before ``tokens_reset_ms``.
        tokens_reset_ms: Milliseconds until the token limit is whole again.
    """

    requests_remaining: int | None = None
    requests_reset_ms: int | None = None
    tokens_remaining: int | None = None
    tokens_reset_ms: int | None = None


@dataclass(frozen=True)
class ModelResponse:
    """A model's answer to one request.

    Attributes:
        content: The text answer, if any.
        tool_calls: Tool calls asked for; empty for a final answer.
        usage: Tokens used by this call.
        model: The model that answered.
        finish_reason: Why the model stopped (e.g. ``"stop"``, ``"tool_calls"``).
        rate_limits: The provider's rate-limit headers on this answer, when it sent any.
    """

    content: str | None
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    model: str
    finish_reason: str
    rate_limits: RateLimitReport | None = None
