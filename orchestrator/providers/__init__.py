"""Model providers behind one interface, and the registry that selects them by name."""

from __future__ import annotations

from orchestrator.providers.base import Provider, ProviderFactory
from orchestrator.providers.registry import BUILTIN_PROVIDERS, ProviderRegistry
from orchestrator.providers.scripted import ScriptedProvider

__all__ = ["BUILTIN_PROVIDERS", "Provider", "ProviderFactory", "ProviderRegistry", "ScriptedProvider"]
