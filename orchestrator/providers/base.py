"""The interface every model provider implements.

A provider turns a provider-neutral :class:`~orchestrator.messages.ModelRequest` into one
call to its model and returns a :class:`~orchestrator.messages.ModelResponse`. It raises
:class:`~orchestrator.errors.ProviderError` for failures, marking rate limits and server
errors as retryable (with the provider's Retry-After in ``retry_after_ms``) and
authentication or invalid requests as not retryable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from orchestrator.messages import ModelRequest, ModelResponse

__all__ = ["Provider", "ProviderFactory"]


@runtime_checkable
class Provider(Protocol):
    """A model provider (scripted, OpenAI, Anthropic, ...).

    Attributes:
        name: The name agents select the provider by.
    """

    name: str

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Run one model call.

        Args:
            request: The conversation, tools and settings to send.

        Returns:
            The model's answer: text, tool calls, or both.

        Raises:
            ProviderError: The provider failed; ``retryable`` says whether to try again.
        """
        ...


#: A zero-argument callable building a provider; called once, on first use.
ProviderFactory = Callable[[], Provider]
