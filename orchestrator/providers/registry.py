"""The provider registry: provider name → factory.

Adding a provider is one new module in this package plus one entry in
:data:`BUILTIN_PROVIDERS` (or one :meth:`ProviderRegistry.register` call by the caller).
Network providers are built from :class:`ProviderSettings` with
:meth:`ProviderRegistry.from_settings`; their SDK modules are imported only then.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping

from orchestrator.errors import DuplicateProvider, UnknownProvider
from orchestrator.providers.base import Provider, ProviderFactory
from orchestrator.providers.scripted import DisabledScriptedProvider, ScriptedProvider
from orchestrator.providers.settings import ProviderSettings

__all__ = ["BUILTIN_PROVIDERS", "SDK_PROVIDER_KINDS", "ProviderRegistry"]


def _openai(settings: ProviderSettings, name: str) -> Provider:
    from orchestrator.providers.openai import OpenAIProvider

    return OpenAIProvider(settings, name=name)


def _anthropic(settings: ProviderSettings, name: str) -> Provider:
    from orchestrator.providers.anthropic import AnthropicProvider

    return AnthropicProvider(settings, name=name)


#: SDK-backed provider kinds, by ``ProviderSettings.kind`` (default: the registry name).
SDK_PROVIDER_KINDS: Mapping[str, Callable[[ProviderSettings, str], Provider]] = {
    "openai": _openai,
    "anthropic": _anthropic,
}

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
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: Mapping[str, ProviderSettings],
        *,
        extra: Mapping[str, ProviderFactory] | None = None,
        allow_scripted: bool = True,
    ) -> ProviderRegistry:
        """Build a registry of :data:`BUILTIN_PROVIDERS` plus one SDK provider per settings entry.

        Args:
            settings: Provider name → settings, e.g. ``{"openai": ProviderSettings(api_key=...)}``.
                A name's ``kind`` (default: the name) selects the SDK: ``openai`` or ``anthropic``.
                An entry without an API key still registers; runs using it fail with
                :class:`~orchestrator.errors.ProviderNotConfigured`.
            extra: More factories to register (e.g. test doubles).
            allow_scripted: False replaces ``scripted`` by a provider whose every call fails
                with :class:`~orchestrator.errors.ScriptedNotAllowed` (a worker without
                ``AGENTQ_ALLOW_SCRIPTED=true``).

        Raises:
            ValueError: A kind is not ``openai`` or ``anthropic``.
            DuplicateProvider: A name is given twice (e.g. ``scripted`` in ``settings``).
        """
        registry = cls(None if allow_scripted else {ScriptedProvider.name: DisabledScriptedProvider})
        for name, entry in settings.items():
            kind = entry.kind or name
            build = SDK_PROVIDER_KINDS.get(kind)
            if build is None:
                raise ValueError(
                    f"provider {name!r}: unknown kind {kind!r}; use one of {sorted(SDK_PROVIDER_KINDS)}"
                )
            registry.register(name, functools.partial(build, entry, name))
        for name, factory in (extra or {}).items():
            registry.register(name, factory)
        return registry

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
        with self._lock:
            provider = self._instances.get(name)
            if provider is None:
                provider = factory()
                self._instances[name] = provider
            return provider

    def names(self) -> tuple[str, ...]:
        """Return the registered provider names, sorted."""
        return tuple(sorted(self._factories))

    def __contains__(self, name: object) -> bool:
        """Return whether a provider is registered under ``name``."""
        return name in self._factories
