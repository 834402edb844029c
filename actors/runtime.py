"""Wiring settings into a store, a broker, an orchestrator and the queue facade."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from pydantic import SecretStr

from actors.broker.factory import build_broker, redis_client
from actors.budget import BudgetPolicy
from actors.events import EventHooks, EventReader, event_sink
from actors.task_queue import AgentTaskQueue
from config.errors import ConfigError
from config.imports import import_object
from config.settings import Settings
from middleware.events import NO_EVENTS, EventSink
from middleware.metrics import LIMIT_GAUGES, LLMMetrics
from orchestrator import (
    DuplicateTool,
    Orchestrator,
    PriceTable,
    ProviderRegistry,
    ProviderSettings,
    ToolRegistry,
    default_registry,
)
from orchestrator.hooks import CompositeHooks, OrchestratorHooks
from orchestrator.limits import LimitPolicy, RedisLimiter
from orchestrator.providers.base_urls import BaseUrlPolicy, InvalidBaseUrlPrefix
from orchestrator.tracing import TracingHooks
from taskstore import RetentionPolicy, TaskStore, build_store, utcnow


@dataclass
class Runtime:
    """Everything a process needs, built from one :class:`Settings`. Connects lazily."""

    settings: Settings
    store: TaskStore
    broker: dramatiq.Broker
    queue: AgentTaskQueue
    budget: BudgetPolicy = field(default_factory=BudgetPolicy)
    _orchestrator: Orchestrator = field(default_factory=Orchestrator, repr=False)
    #: Where this process publishes live events (the middleware, the facade and the orchestrator's hooks).
    events: EventSink = NO_EVENTS

    def orchestrator(self) -> Orchestrator:
        """The orchestrator (its SDK clients connect on their first call)."""
        return self._orchestrator


def build_limiter(settings: Settings, broker: dramatiq.Broker | None = None) -> RedisLimiter | None:
    """The model-call limiter when any provider or organization limit is configured, else None.

    It shares the broker's Redis connections (a Redis broker's), or opens its own from the settings.
    """
    if not settings.limits_configured():
        return None
    policy = LimitPolicy(settings.provider_limits, org_tpm=settings.org_tpm, orgs=settings.org_limits)
    client: redis.Redis = broker.client if isinstance(broker, RedisBroker) else redis_client(settings)
    return RedisLimiter(client, policy, max_wait_ms=settings.limit_max_wait_ms)


def build_orchestrator(
    settings: Settings, events: EventSink = NO_EVENTS, *, limiter: RedisLimiter | None = None
) -> Orchestrator:
    """An orchestrator with the OpenAI and Anthropic providers and the price table from ``settings``.

    ``scripted`` runs only with ``AGENTQ_ALLOW_SCRIPTED=true``, and an agent's own ``base_url`` only
    under a prefix of ``AGENTQ_ALLOWED_BASE_URLS``; otherwise their tasks fail at once. Its hooks trace
    every run, count tokens (with a metrics port) and publish model and tool steps to ``events``.
    ``limiter`` admits each model call (:func:`build_limiter`); None: no limits.
    """
    providers = ProviderRegistry.from_settings(
        {
            "openai": ProviderSettings(
                api_key=_secret(settings.openai_api_key),
                base_url=settings.openai_base_url,
                timeout_s=settings.provider_timeout_s,
            ),
            "anthropic": ProviderSettings(
                api_key=_secret(settings.anthropic_api_key),
                base_url=settings.anthropic_base_url,
                timeout_s=settings.provider_timeout_s,
            ),
        },
        allow_scripted=settings.allow_scripted,
    )
    try:
        prices = PriceTable.from_mapping(settings.model_prices)
    except ValueError as exc:
        raise ConfigError(f"AGENTQ_MODEL_PRICES_JSON: {exc}") from exc
    try:
        base_urls = BaseUrlPolicy(settings.allowed_base_urls)
    except InvalidBaseUrlPrefix as exc:
        raise ConfigError(f"AGENTQ_ALLOWED_BASE_URLS: {exc}") from exc
    every: list[OrchestratorHooks] = [TracingHooks(record_content=settings.trace_content)]
    if settings.metrics_port is not None:
        every.append(LLMMetrics(prices))
        LIMIT_GAUGES.watch(limiter)
    if events is not NO_EVENTS:
        every.append(EventHooks(events, prices, delta_flush_ms=settings.events_delta_flush_ms))
    hooks = every[0] if len(every) == 1 else CompositeHooks(*every)
    return Orchestrator(
        providers,
        build_tools(settings.tools),
        prices=prices,
        hooks=hooks,
        base_urls=base_urls,
        repeat_unfinished_tools=settings.repeat_unfinished_tools,
        limiter=limiter,
    )


def build_tools(paths: tuple[str, ...]) -> ToolRegistry:
    """The built-in tools plus those of each registry named in ``AGENTQ_TOOLS`` (``package.module:name``).

    Raises:
        ConfigError: A path cannot be imported, is not a ``ToolRegistry``, or repeats a tool's name.
    """
    registry = default_registry()
    for path in paths:
        tools = import_object(path, "AGENTQ_TOOLS")
        if not isinstance(tools, ToolRegistry):
            raise ConfigError(f"AGENTQ_TOOLS={path!r} is a {type(tools).__name__}, not a ToolRegistry")
        try:
            registry.include(tools)
        except DuplicateTool as exc:
            raise ConfigError(f"AGENTQ_TOOLS={path!r}: {exc}") from exc
    return registry


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_runtime(
    settings: Settings,
    *,
    store: TaskStore | None = None,
    broker: dramatiq.Broker | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Runtime:
    """A runtime from ``settings``; ``store`` and ``broker`` may be supplied (tests).

    Live events go through the broker's Redis client (none on a broker without Redis).
    """
    store = store if store is not None else build_store(settings)
    broker = broker if broker is not None else build_broker(settings, store, clock=clock)
    client = broker.client if isinstance(broker, RedisBroker) else None
    events = event_sink(settings, client)
    retention = RetentionPolicy(
        completed_age_s=settings.keep_completed_age_s,
        completed_count=settings.keep_completed_count,
        failed_age_s=settings.keep_failed_age_s,
        failed_count=settings.keep_failed_count,
    )
    queue = AgentTaskQueue(
        store,
        broker,
        max_attempts=settings.max_attempts,
        max_context_bytes=settings.max_context_bytes,
        retention=retention,
        clock=clock,
        events=events,
        reader=EventReader(client, store, record_content=settings.trace_content),
    )
    budget = BudgetPolicy.from_settings(settings.monthly_budget_usd, settings.organization_budgets)
    return Runtime(
        settings=settings,
        store=store,
        broker=broker,
        queue=queue,
        budget=budget,
        _orchestrator=build_orchestrator(settings, events, limiter=build_limiter(settings, broker)),
        events=events,
    )
