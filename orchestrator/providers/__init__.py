"""Model providers behind one interface, and the registry that selects them by name.

The SDK-backed providers live in :mod:`orchestrator.providers.openai` and
:mod:`orchestrator.providers.anthropic`; they are imported when first built, so importing
this package does not import the SDKs. Code on an event loop calls any provider through
:func:`call_provider` (``acomplete`` when the provider has it, else ``complete`` in a thread).
"""

from __future__ import annotations

from orchestrator.providers.base import AsyncProvider, Provider, ProviderFactory, call_provider
from orchestrator.providers.base_urls import BaseUrlPolicy
from orchestrator.providers.registry import BUILTIN_PROVIDERS, SDK_PROVIDER_KINDS, ProviderRegistry
from orchestrator.providers.scripted import ScriptedProvider
from orchestrator.providers.settings import DEFAULT_MAX_TOKENS, ProviderSettings

__all__ = [
    "BUILTIN_PROVIDERS",
    "DEFAULT_MAX_TOKENS",
    "SDK_PROVIDER_KINDS",
    "AsyncProvider",
    "BaseUrlPolicy",
    "Provider",
    "ProviderFactory",
    "ProviderRegistry",
    "ProviderSettings",
    "ScriptedProvider",
    "call_provider",
]
