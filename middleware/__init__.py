"""Dramatiq middleware, one concern per module, assembled in one documented order.

The stack (``before_*`` hooks run top to bottom, ``after_*`` bottom to top):

=====================  ==========================================================
name                   middleware
=====================  ==========================================================
``age_limit``          ``dramatiq.middleware.AgeLimit``
``time_limit``         ``dramatiq.middleware.TimeLimit`` (``AGENTQ_TASK_TIME_LIMIT_MS``)
``shutdown``           ``dramatiq.middleware.ShutdownNotifications``
``callbacks``          ``dramatiq.middleware.Callbacks``
``pipelines``          ``dramatiq.middleware.Pipelines``
``retries``            :class:`middleware.retries.Retries` (ordinary actors only)
``current_message``    ``dramatiq.middleware.CurrentMessage``
(user middleware)      ``AGENTQ_MIDDLEWARE``: dotted paths, in the order given
``task_lifecycle``        :class:`middleware.task_lifecycle.TaskLifecycle` — always last, always on
=====================  ==========================================================

``AGENTQ_DISABLE_MIDDLEWARE`` names entries of :data:`OPTIONAL` to leave out.
User middleware sits before ``task_lifecycle`` so a user's ``SkipMessage`` happens
before the task is claimed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime

import dramatiq
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)

from config.errors import ConfigError
from config.settings import Settings
from middleware.retries import Retries
from middleware.task_lifecycle import AttemptResult, EnqueueRejected, TaskLifecycle, current_claim
from taskstore import TaskStore, utcnow

#: Our middleware that can be switched off by name, in stack order, with their factories.
OPTIONAL: dict[str, Callable[[Settings], dramatiq.Middleware]] = {
    "age_limit": lambda settings: AgeLimit(),
    "time_limit": lambda settings: TimeLimit(time_limit=settings.task_time_limit_ms),
    "shutdown": lambda settings: ShutdownNotifications(),
    "callbacks": lambda settings: Callbacks(),
    "pipelines": lambda settings: Pipelines(),
    "retries": lambda settings: Retries(),
    "current_message": lambda settings: CurrentMessage(),
}


def build_middleware(
    settings: Settings, store: TaskStore, *, clock: Callable[[], datetime] = utcnow
) -> list[dramatiq.Middleware]:
    """The middleware stack for ``settings``, in the documented order."""
    unknown = sorted(set(settings.disabled_middleware) - set(OPTIONAL))
    if unknown:
        raise ConfigError(
            f"AGENTQ_DISABLE_MIDDLEWARE names unknown middleware {', '.join(map(repr, unknown))}"
            f" (known: {', '.join(OPTIONAL)})"
        )
    stack = [
        factory(settings) for name, factory in OPTIONAL.items() if name not in settings.disabled_middleware
    ]
    stack.extend(load_middleware(path) for path in settings.extra_middleware)
    stack.append(TaskLifecycle(store, backoff_ms=settings.backoff_ms, clock=clock))
    return stack


def load_middleware(path: str) -> dramatiq.Middleware:
    """Import ``package.module:Name`` (or ``package.module.Name``); instantiate it if it is a class."""
    module_name, _, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"AGENTQ_MIDDLEWARE={path!r} cannot be imported: {exc}") from exc
    instance = target() if isinstance(target, type) else target
    if not isinstance(instance, dramatiq.Middleware):
        raise ConfigError(f"AGENTQ_MIDDLEWARE={path!r} is not a dramatiq.Middleware")
    return instance


__all__ = [
    "OPTIONAL",
    "AttemptResult",
    "EnqueueRejected",
    "Retries",
    "TaskLifecycle",
    "build_middleware",
    "current_claim",
    "load_middleware",
]
