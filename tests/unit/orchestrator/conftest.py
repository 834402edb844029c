"""Fixtures for the provider tests: one model call made blocking or on an event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from orchestrator.messages import ModelRequest, ModelResponse
from orchestrator.providers.base import AsyncProvider, Provider

#: Makes one model call with a provider and returns its answer.
Call = Callable[[Provider, ModelRequest], ModelResponse]


async def call_on_a_loop(provider: Provider, request: ModelRequest) -> ModelResponse:
    """``provider.acomplete(request)``, then the loop's clients closed (the loop ends after)."""
    assert isinstance(provider, AsyncProvider), f"{provider!r} has no acomplete"
    try:
        return await provider.acomplete(request)
    finally:
        aclose = getattr(provider, "aclose", None)
        if aclose is not None:
            await aclose()


@pytest.fixture(params=["complete", "acomplete"])
def call(request: pytest.FixtureRequest) -> Call:
    """Each test using it runs twice: through ``complete``, and through ``acomplete`` on a new loop."""
    if request.param == "complete":
        return lambda provider, model_request: provider.complete(model_request)
    return lambda provider, model_request: asyncio.run(call_on_a_loop(provider, model_request))
