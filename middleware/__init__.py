"""Dramatiq middleware, one concern per module, assembled in one documented order.

The stack (``before_*`` hooks run top to bottom, ``after_*`` bottom to top):

=======================  ========================================================================
name                     middleware
=======================  ========================================================================
(always)                 :class:`middleware.store_lifecycle.StoreLifecycle` — checks schema, closes DB last
``tracing``              :class:`middleware.tracing.Tracing` — publish/process spans around everything
(always)                 :class:`middleware.redaction.Redaction` — registers the secrets to redact
``sentry``               :class:`middleware.sentry.Sentry` — scope, tags, one event per dead letter
(always)                 :class:`middleware.worker_logs.WorkerLogs` — no per-request HTTP lines; JSON lines
``metrics``              :class:`middleware.metrics.Metrics` — Prometheus endpoint per process
``presence``             :class:`middleware.presence.WorkerPresence` — who runs what (dashboard)
``age_limit``            ``dramatiq.middleware.AgeLimit``
``time_limit``           ``dramatiq.middleware.TimeLimit`` (``AGENTQ_TASK_TIME_LIMIT_MS``)
``shutdown``             ``dramatiq.middleware.ShutdownNotifications``
``callbacks``            ``dramatiq.middleware.Callbacks``
``pipelines``            ``dramatiq.middleware.Pipelines``
``retries``              :class:`middleware.retries.Retries` (ordinary actors only)
``current_message``      ``dramatiq.middleware.CurrentMessage``
``periodiq``             ``periodiq.PeriodiqMiddleware`` — skips minute ticks older than 30 s
(user middleware)        ``AGENTQ_MIDDLEWARE``: dotted paths, in the order given
``stalled_jobs``         :class:`middleware.stalled_jobs.StalledJobs` — leases, stalled recovery
``cancel_watch``         :class:`middleware.cancel_watch.CancelWatch` — cancel requests, within moments
``shutdown_deadline``    :class:`middleware.shutdown_deadline.ShutdownDeadline`
``reconciler``           :class:`middleware.reconciler.Reconciler` — lost messages, stale approvals
``pause``                :class:`middleware.pause.Pause` — holds prefetched messages while paused
``rate_limit``           :class:`middleware.start_limit.StartRateLimit` — task starts per window
(always)                 :class:`middleware.task_lifecycle.TaskLifecycle` — always last
=======================  ========================================================================

``tracing`` is second so its ``before_*`` hooks run before every other (its span covers
skips, the claim, the run and the status writes) and its ``after_*`` hooks after every
other but ``StoreLifecycle``. ``AGENTQ_DISABLE_MIDDLEWARE`` names entries to leave out. User middleware sits
before ``task_lifecycle`` so a user's ``SkipMessage`` happens before the task is
claimed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial

import dramatiq
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)
from opentelemetry.trace import TracerProvider
from periodiq import PeriodiqMiddleware

from config.errors import ConfigError
from config.imports import import_object
from config.settings import Settings
from config.trace_export import configure_tracing, shutdown_tracing
from middleware.attempts import AttemptRegistry
from middleware.cancel_watch import CancelWatch
from middleware.events import NO_EVENTS, EventSink
from middleware.in_flight import RunsInFlight
from middleware.metrics import Metrics
from middleware.outcome import AttemptResult
from middleware.pause import Pause
from middleware.presence import WorkerPresence
from middleware.reconciler import Reconciler
from middleware.redaction import Redaction
from middleware.retries import Retries
from middleware.sentry import Sentry
from middleware.shutdown_deadline import ShutdownDeadline
from middleware.stalled_jobs import StalledJobs
from middleware.start_limit import Limit, StartRateLimit, parse_kind_limits
from middleware.store_lifecycle import StoreLifecycle
from middleware.task_lifecycle import EnqueueRejected, TaskLifecycle, current_claim
from middleware.tracing import Tracing
from middleware.worker_logs import WorkerLogs
from taskstore import TaskStore, utcnow

#: Dramatiq's middleware we use, switchable by name, in stack order.
DRAMATIQ: dict[str, Callable[[Settings], dramatiq.Middleware]] = {
    "age_limit": lambda settings: AgeLimit(),
    "time_limit": lambda settings: TimeLimit(time_limit=settings.task_time_limit_ms),
    "shutdown": lambda settings: ShutdownNotifications(),
    "callbacks": lambda settings: Callbacks(),
    "pipelines": lambda settings: Pipelines(),
    "retries": lambda settings: Retries(),
    "current_message": lambda settings: CurrentMessage(),
    "periodiq": lambda settings: PeriodiqMiddleware(skip_delay=30),
}
#: Our middleware after the user's, switchable by name, in stack order.
RELIABILITY = ("stalled_jobs", "cancel_watch", "shutdown_deadline", "reconciler", "pause", "rate_limit")
#: Our observability middleware, after ``StoreLifecycle`` (sentry with a DSN, metrics with a port).
OBSERVABILITY = ("tracing", "sentry", "metrics", "presence")
#: Seconds past ``AGENTQ_SHUTDOWN_TIMEOUT_MS`` a stopping worker waits for the ends of its cut-off runs.
DRAIN_GRACE_S = 10.0
#: Every name ``AGENTQ_DISABLE_MIDDLEWARE`` accepts.
OPTIONAL = (*OBSERVABILITY, *DRAMATIQ, *RELIABILITY)


def build_middleware(
    settings: Settings,
    store: TaskStore,
    *,
    clock: Callable[[], datetime] = utcnow,
    tracer_provider: TracerProvider | None = None,
    events: EventSink = NO_EVENTS,
) -> list[dramatiq.Middleware]:
    """The middleware stack for ``settings``, in the documented order (``tracer_provider``: tests).

    ``events``: where ``TaskLifecycle``, ``StalledJobs`` and ``Reconciler`` publish live events.
    """
    disabled = set(settings.disabled_middleware)
    unknown = sorted(disabled - set(OPTIONAL))
    if unknown:
        raise ConfigError(
            f"AGENTQ_DISABLE_MIDDLEWARE names unknown middleware {', '.join(map(repr, unknown))}"
            f" (known: {', '.join(OPTIONAL)})"
        )
    attempts = AttemptRegistry()
    time_limit_ms = None if "time_limit" in disabled else settings.task_time_limit_ms
    in_flight = RunsInFlight(settings.queue_concurrency, default_time_limit_ms=time_limit_ms)
    limit = Limit(settings.rate_limit_max, settings.rate_limit_window_ms) if settings.rate_limit_max else None
    reliability: dict[str, dramatiq.Middleware] = {
        "stalled_jobs": StalledJobs(
            store,
            attempts,
            interval_ms=settings.stalled_interval_ms,
            max_stalled_count=settings.max_stalled_count,
            clock=clock,
            events=events,
        ),
        "cancel_watch": CancelWatch(attempts),
        "shutdown_deadline": ShutdownDeadline(
            attempts, timeout_ms=settings.shutdown_timeout_ms, in_flight=in_flight
        ),
        "reconciler": Reconciler(
            store,
            interval_ms=settings.reconcile_interval_ms,
            pending_grace_ms=settings.pending_grace_ms,
            approval_timeout_s=settings.approval_timeout_s,
            clock=clock,
            events=events,
        ),
        "pause": Pause(),
        "rate_limit": StartRateLimit(
            limit=limit,
            per_kind=parse_kind_limits(settings.kind_rate_limits),
        ),
    }
    stack: list[dramatiq.Middleware] = [StoreLifecycle(store)]
    if "tracing" not in disabled:
        tracing = Tracing(
            attempts,
            tracer_provider=tracer_provider,
            setup=partial(configure_tracing, settings),
            shutdown=shutdown_tracing,
        )
        stack.append(tracing)
    stack.append(Redaction(settings))
    if settings.sentry_dsn is not None and "sentry" not in disabled:
        stack.append(Sentry(settings, store, attempts))
    stack.append(WorkerLogs(json_lines=settings.log_format == "json"))
    if settings.metrics_port is not None and "metrics" not in disabled:
        stack.append(Metrics(settings.metrics_port, attempts))
    if "presence" not in disabled:
        stack.append(WorkerPresence(attempts))
    stack.extend(factory(settings) for name, factory in DRAMATIQ.items() if name not in disabled)
    stack.extend(load_middleware(path) for path in settings.extra_middleware)
    stack.extend(middleware for name, middleware in reliability.items() if name not in disabled)
    stack.append(
        TaskLifecycle(
            store,
            backoff_ms=settings.backoff_ms,
            lease_ms=settings.stalled_interval_ms,
            max_postpones=settings.max_postpones,
            max_postpone_ms=settings.max_postpone_ms,
            org_concurrency=settings.org_concurrency,
            clock=clock,
            attempts=attempts,
            events=events,
            in_flight=in_flight,
            drain_timeout_s=settings.shutdown_timeout_ms / 1000 + DRAIN_GRACE_S,
        )
    )
    return stack


def load_middleware(path: str) -> dramatiq.Middleware:
    """Import ``package.module:Name`` (or ``package.module.Name``); instantiate it if it is a class."""
    target = import_object(path, "AGENTQ_MIDDLEWARE")
    instance = target() if isinstance(target, type) else target
    if not isinstance(instance, dramatiq.Middleware):
        raise ConfigError(f"AGENTQ_MIDDLEWARE={path!r} is not a dramatiq.Middleware")
    return instance


__all__ = [
    "DRAMATIQ",
    "OBSERVABILITY",
    "OPTIONAL",
    "RELIABILITY",
    "AttemptResult",
    "CancelWatch",
    "EnqueueRejected",
    "Metrics",
    "Reconciler",
    "Retries",
    "Sentry",
    "ShutdownDeadline",
    "StalledJobs",
    "StoreLifecycle",
    "TaskLifecycle",
    "Tracing",
    "WorkerPresence",
    "build_middleware",
    "current_claim",
    "load_middleware",
]
