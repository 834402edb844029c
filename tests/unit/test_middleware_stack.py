"""The middleware stack: documented order, switches, user middleware by dotted path."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.middleware import TimeLimit

from config.errors import ConfigError
from middleware import OPTIONAL, Reconciler, Retries, TaskLifecycle, Tracing, build_middleware
from taskstore import InMemoryTaskStore
from tests.harness import harness_settings


class Recorder(dramatiq.Middleware):
    """A user middleware loaded by dotted path in the tests."""


def names(stack: list[dramatiq.Middleware]) -> list[str]:
    return [type(middleware).__name__ for middleware in stack]


def test_the_default_stack_order_ends_with_the_task_lifecycle() -> None:
    stack = build_middleware(harness_settings(), InMemoryTaskStore())

    assert names(stack) == [
        "CloseStore",
        "Tracing",
        "Redaction",
        "AgeLimit",
        "TimeLimit",
        "ShutdownNotifications",
        "Callbacks",
        "Pipelines",
        "Retries",
        "CurrentMessage",
        "PeriodiqMiddleware",
        "StalledJobs",
        "ShutdownDeadline",
        "Reconciler",
        "Pause",
        "StartRateLimit",
        "TaskLifecycle",
    ]
    assert isinstance(stack[8], Retries) and isinstance(stack[-1], TaskLifecycle)


def test_tracing_wraps_every_other_hook_but_close_store() -> None:
    # Given the stack: before_* hooks run in list order, after_* in reverse
    stack = build_middleware(harness_settings(), InMemoryTaskStore())

    # Then Tracing's before_process_message runs before the claim and its after hooks after the status writes
    assert isinstance(stack[1], Tracing)
    assert stack.index(stack[1]) < names(stack).index("TaskLifecycle")
    assert "tracing" in OPTIONAL
    assert not any(
        isinstance(m, Tracing)
        for m in build_middleware(harness_settings(disabled_middleware=("tracing",)), InMemoryTaskStore())
    )


def test_optional_middleware_can_be_switched_off_by_name() -> None:
    stack = build_middleware(
        harness_settings(disabled_middleware=("time_limit", "retries", "reconciler")), InMemoryTaskStore()
    )

    assert not any(isinstance(middleware, TimeLimit | Retries | Reconciler) for middleware in stack)
    assert isinstance(stack[-1], TaskLifecycle)


def test_unknown_switch_names_are_a_config_error_naming_them() -> None:
    with pytest.raises(ConfigError, match="'tracin'"):
        build_middleware(harness_settings(disabled_middleware=("tracin",)), InMemoryTaskStore())
    assert "time_limit" in OPTIONAL


def test_user_middleware_goes_before_the_task_lifecycle() -> None:
    settings = harness_settings(extra_middleware=("tests.unit.test_middleware_stack:Recorder",))

    stack = build_middleware(settings, InMemoryTaskStore())

    assert names(stack)[-7:] == [
        "Recorder",
        "StalledJobs",
        "ShutdownDeadline",
        "Reconciler",
        "Pause",
        "StartRateLimit",
        "TaskLifecycle",
    ]


@pytest.mark.parametrize("path", ["no.such.module:Thing", "tests.unit.test_middleware_stack:names"])
def test_bad_user_middleware_paths_are_config_errors(path: str) -> None:
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        build_middleware(harness_settings(extra_middleware=(path,)), InMemoryTaskStore())
