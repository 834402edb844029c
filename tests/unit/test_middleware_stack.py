"""The middleware stack: documented order, switches, user middleware by dotted path."""

from __future__ import annotations

import re

import dramatiq
import pytest
from dramatiq.middleware import TimeLimit

import middleware
from config.errors import ConfigError
from middleware import OPTIONAL, Reconciler, Retries, StoreLifecycle, TaskLifecycle, Tracing, build_middleware
from taskstore import InMemoryTaskStore
from tests.harness import harness_settings

#: The first dotted name in a row's description: ``:class:`middleware.pause.Pause``` or ``dramatiq.…``.
DOTTED_NAME = re.compile(r":class:`([\w.]+)`|``([\w.]+)``")


class Recorder(dramatiq.Middleware):
    """A user middleware loaded by dotted path in the tests."""


def names(stack: list[dramatiq.Middleware]) -> list[str]:
    return [type(middleware).__name__ for middleware in stack]


def documented_stack() -> list[tuple[str, str]]:
    """(switch, class name) of each row of the table in ``middleware``'s docstring, top to bottom."""
    assert middleware.__doc__ is not None
    lines = middleware.__doc__.splitlines()
    borders = [index for index, line in enumerate(lines) if line.startswith("=====")]
    assert len(borders) == 3, "the stack table has a header and a body"
    width = lines[borders[0]].index(" ") + 2
    rows = []
    for line in lines[borders[1] + 1 : borders[2]]:
        found = DOTTED_NAME.search(line[width:])
        assert found is not None, f"no middleware named in the row {line!r}"
        dotted = found.group(1) or found.group(2)
        rows.append((line[:width].strip().strip("`"), dotted.rpartition(".")[2]))
    return rows


def test_the_stack_is_built_in_the_order_the_package_docstring_documents() -> None:
    # Given every optional middleware switched on, and one user middleware
    settings = harness_settings(
        sentry_dsn="https://key@sentry.invalid/1",
        log_format="json",
        metrics_port=9,
        extra_middleware=("tests.unit.test_middleware_stack:Recorder",),
    )

    stack = build_middleware(settings, InMemoryTaskStore())

    # Then it is the documented table, row for row (the user's row is the user's class)
    documented = [("Recorder" if name == "AGENTQ_MIDDLEWARE" else name) for _, name in documented_stack()]
    assert names(stack) == documented
    # and every name AGENTQ_DISABLE_MIDDLEWARE accepts is a documented switch
    switches = {switch for switch, _ in documented_stack()}
    assert set(OPTIONAL) <= switches


def test_the_default_stack_order_ends_with_the_task_lifecycle() -> None:
    stack = build_middleware(harness_settings(), InMemoryTaskStore())

    assert names(stack) == [
        "StoreLifecycle",
        "Tracing",
        "Redaction",
        "WorkerLogs",
        "WorkerPresence",
        "AgeLimit",
        "TimeLimit",
        "ShutdownNotifications",
        "Callbacks",
        "Pipelines",
        "Retries",
        "CurrentMessage",
        "PeriodiqMiddleware",
        "StalledJobs",
        "CancelWatch",
        "ShutdownDeadline",
        "Reconciler",
        "Pause",
        "StartRateLimit",
        "TaskLifecycle",
    ]
    assert isinstance(stack[10], Retries) and isinstance(stack[-1], TaskLifecycle)


def test_tracing_wraps_every_other_hook_but_store_lifecycle() -> None:
    # Given the stack: before_* hooks run in list order, after_* in reverse
    stack = build_middleware(harness_settings(), InMemoryTaskStore())

    # Then only StoreLifecycle comes before Tracing (its before hooks run first, its after hooks run last)
    assert isinstance(stack[0], StoreLifecycle) and isinstance(stack[1], Tracing)
    assert not any(isinstance(m, Tracing | StoreLifecycle) for m in stack[2:])
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

    assert names(stack)[-8:] == [
        "Recorder",
        "StalledJobs",
        "CancelWatch",
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
