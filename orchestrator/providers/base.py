"""The interface every model provider implements.

A provider turns a provider-neutral :class:`~orchestrator.messages.ModelRequest` into one
call to its model and returns a :class:`~orchestrator.messages.ModelResponse`. It raises
:class:`~orchestrator.errors.ProviderError` for failures, marking rate limits and server
errors as retryable (with the provider's Retry-After in ``retry_after_ms``) and
authentication or invalid requests as not retryable.

A provider may also offer :meth:`AsyncProvider.acomplete`, the same call as a coroutine, so a
run waiting for its model holds no thread. Callers on an event loop use :func:`call_provider`: it
awaits ``acomplete`` when the provider has one and otherwise runs ``complete`` in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from orchestrator.messages import ModelRequest, ModelResponse

__all__ = ["AsyncProvider", "Provider", "ProviderFactory", "call_provider"]


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


@runtime_checkable
class AsyncProvider(Protocol):
    """A provider that can also make its model call as a coroutine (optional; see :func:`call_provider`).

    Attributes:
        name: The name agents select the provider by.
    """

    name: str

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        """Run one model call on the running event loop; the same call as ``complete``.

        Cancelling the awaiting task aborts the call and raises :class:`asyncio.CancelledError`
        (never a ``ProviderError``).

        Raises:
            ProviderError: The provider failed; ``retryable`` says whether to try again.
        """
        ...


async def call_provider(provider: Provider, request: ModelRequest) -> ModelResponse:
    """Run one model call from an event loop.

    Awaits ``provider.acomplete`` when the provider has it; otherwise runs the blocking
    ``provider.complete`` in the loop's default thread pool (:func:`asyncio.to_thread`, context
    variables kept). Cancelling a call running in a thread stops the wait, not the thread.

    Args:
        provider: Any :class:`Provider`, with or without ``acomplete``.
        request: The conversation, tools and settings to send.

    Returns:
        The model's answer.

    Raises:
        ProviderError: The provider failed.
        asyncio.CancelledError: The awaiting task was cancelled.
    """
    acomplete = getattr(provider, "acomplete", None)
    if acomplete is not None and callable(acomplete):
        response: ModelResponse = await acomplete(request)
        return response
    return await asyncio.to_thread(provider.complete, request)


#: A zero-argument callable building a provider; called once, on first use.
ProviderFactory = Callable[[], Provider]
