"""The interface the agent loop calls around each model call, and the default that limits nothing.

Before a model call the loop asks its :class:`CallLimiter` for a :class:`Permit` (which may wait a
little, or raise :class:`~orchestrator.errors.LimitPostponed`); after the call it settles the permit
with the answer or the error, so the limiter can charge what the provider reported.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Protocol

from orchestrator.messages import ModelRequest, ModelResponse

if TYPE_CHECKING:
    from orchestrator.agent import TaskInput

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_OUTPUT_TOKENS",
    "NO_LIMITS",
    "CallLimiter",
    "NoLimits",
    "Permit",
    "estimate_tokens",
]

#: Characters per token assumed when estimating a prompt (OpenAI's rule of thumb for English).
CHARS_PER_TOKEN = 4
#: Output tokens assumed for a call whose agent sets no ``max_tokens``, until the call settles.
DEFAULT_OUTPUT_TOKENS = 1024
#: Tokens counted per message for its role and framing.
TOKENS_PER_MESSAGE = 4


class Permit(Protocol):
    """Leave to make one model call; settle it exactly once when the call ends."""

    def settle(self, response: ModelResponse | None = None, error: BaseException | None = None) -> None:
        """Record how the call ended: the answer (its usage and rate-limit headers) or the error.

        Never raises: a limiter that cannot record the end logs it and lets the run go on.
        """
        ...


class CallLimiter(Protocol):
    """Decides when a model call may be made."""

    def acquire(self, provider: str, request: ModelRequest, task: TaskInput) -> Permit:
        """Wait, if the wait is short, until the call fits every limit that applies to it.

        Args:
            provider: The provider's name, as agents select it.
            request: The call (its model, prompt and ``max_tokens`` give the token estimate;
                ``timeout_s`` bounds the wait).
            task: The task the call is for (its organization's quota applies).

        Raises:
            LimitPostponed: The call does not fit soon enough: postpone the task.
        """
        ...


class _NoPermit:
    """The permit of :class:`NoLimits`: settling it does nothing."""

    def settle(self, response: ModelResponse | None = None, error: BaseException | None = None) -> None:
        """Nothing to record."""


class NoLimits:
    """The default limiter: every call may go at once."""

    _permit = _NoPermit()

    def acquire(self, provider: str, request: ModelRequest, task: TaskInput) -> Permit:
        """Return a permit at once."""
        return self._permit


#: The shared :class:`NoLimits` instance.
NO_LIMITS = NoLimits()


def estimate_tokens(request: ModelRequest) -> int:
    """Tokens a call may use: its prompt (characters ÷ :data:`CHARS_PER_TOKEN`, tools included) plus its
    output limit (``max_tokens``, else :data:`DEFAULT_OUTPUT_TOKENS`). The provider's reported usage
    replaces the estimate when the call settles."""
    chars = len(request.system_prompt or "")
    for message in request.messages:
        chars += len(message.content)
        for call in message.tool_calls:
            arguments = call.raw_arguments if call.raw_arguments is not None else json.dumps(call.arguments)
            chars += len(call.name) + len(arguments)
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.parameters))
    prompt = chars // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE * len(request.messages)
    output = request.max_tokens if request.max_tokens is not None else DEFAULT_OUTPUT_TOKENS
    return prompt + max(output, 0)
