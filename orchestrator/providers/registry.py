"""The provider registry: provider name → factory.

Adding a provider is one new module in this package plus one entry in
:data:`BUILTIN_PROVIDERS` (or one :meth:`ProviderRegistry.register` call by the caller).
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.errors import DuplicateProvider, UnknownProvider
from orchestrator.providers.base import Provider, ProviderFactory
from orchestrator.providers.scripted import ScriptedProvider

__all__ = ["BUILTIN_PROVIDERS", "ProviderRegistry"]

#: Providers every default registry holds, by name.
BUILTIN_PROVIDERS: Mapping[str, ProviderFactory] = {
    ScriptedProvider.name: ScriptedProvider,
}


class ProviderRegistry:
    """Maps provider names to factories and builds each provider once, on first use.

    Args:
        factories: The providers to start with; None means :data:`BUILTIN_PROVIDERS`
            (the offline ``scripted`` provider). Pass ``{}`` for an empty registry.
    """

    def __init__(self, factories: Mapping[str, ProviderFactory] | None = None) -> None:
        """Create a registry; see the class docstring."""
        self._factories: dict[str, ProviderFactory] = dict(
            BUILTIN_PROVIDERS if factories is None else factories
        )
        self._instances: dict[str, Provider] = {}

    def register(self, name: str, factory: ProviderFactory) -> None:
        """Register a provider factory.

        Args:
            name: The name agents select the provider by.
            factory: A zero-argument callable returning the provider.

        Raises:
            DuplicateProvider: A provider with this name is already registered.
        """
        if name in self._factories:
            raise DuplicateProvider(name)
        self._factories[name] = factory

    def get(self, name: str) -> Provider:
        """Return the provider registered under ``name``, building it on first use.

        Raises:
            UnknownProvider: No provider has this name.
        """
        provider = self._instances.get(name)
        if provider is not None:
            return provider
        factory = self._factories.get(name)
        if factory is None:
            raise UnknownProvider(name, self.names())
        provider = factory()
        self._instances[name] = provider
        return provider

    def names(self) -> tuple[str, ...]:
        """Return the registered provider names, sorted."""
        return tuple(sorted(self._factories))

    def __contains__(self, name: object) -> bool:
        """Return whether a provider is registered under ``name``."""
        return name in self._factories
