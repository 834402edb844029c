"""Fixtures of the dashboard tests: the queue on a real store (SQLite or Postgres) and the real Redis, a
dashboard app over it, and tasks run by a real Dramatiq worker thread."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from dashboard.access import Access, Grant
from dashboard.app import create_app
from dashboard.extensions import Extensions
from dashboard.service import Dashboard
from taskstore import TaskStatus, TaskStore
from tests.harness import Harness, redis_harness, wait_until

ADMIN_TOKEN = "admin-token-0123456789abcdef"
READONLY_TOKEN = "readonly-token-0123456789abcdef"
ORG_TOKEN = "org-token-0123456789abcdef01"
#: A context carrying a secret-shaped value: pages show it filtered.
LEAKY_CONTEXT = {"api_key": "sk-proj-abcdefghijklmnopqrstuvwxyz0123", "week": 47}

#: Scripts of the scripted provider (orchestrator/providers/scripted.py).
COMPLETES: list[dict[str, Any]] = [
    {"tool": "calculate", "arguments": {"expression": "6*7"}},
    {"answer": "It is 42."},
]
FAILS: list[dict[str, Any]] = [{"fail": "provider exploded", "retryable": False}]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def board_store(request: pytest.FixtureRequest) -> TaskStore:
    """The dashboard tests' store: SQLite on a file, or Postgres."""
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


@pytest.fixture
def app(board_store: TaskStore, redis_url: str) -> Iterator[Harness]:
    """The queue (kinds, middleware, lane broker) on the store and the real Redis."""
    with redis_harness(board_store, redis_url) as harness:
        yield harness


def dashboard_of(harness: Harness, **fields: Any) -> Dashboard:
    broker: Any = harness.broker
    values: dict[str, Any] = {
        "budget": harness.runtime.budget,
        "redis": broker.client,
        "namespace": broker.namespace,
        "trace_url_template": "http://jaeger.local:16686/trace/{trace_id}",
        "refresh_s": 1.0,
        "extensions": Extensions(),
    }
    values.update(fields)
    return Dashboard(harness.queue, **values)


def tokens() -> Access:
    from tests.harness import ORG

    return Access(
        [
            Grant(ADMIN_TOKEN, "admin", None),
            Grant(READONLY_TOKEN, "viewer", None),
            Grant(ORG_TOKEN, "viewer", ORG),
        ]
    )


@pytest.fixture
def open_client(app: Harness) -> Iterator[TestClient]:
    """A client of the dashboard without tokens (the local operator), addressed as 127.0.0.1."""
    with TestClient(create_app(dashboard_of(app), Access([])), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def token_app(app: Harness) -> Any:
    return create_app(dashboard_of(app), tokens())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def csrf_of(client: TestClient, path: str = "/") -> str:
    """The CSRF token a page of ``client``'s session carries."""
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get(path).text)
    assert found is not None, "no csrf-token meta tag"
    return found[1]


@dataclass
class Seeded:
    completed: str
    failed: str
    pending: str


def run_tasks(
    harness: Harness, tasks: list[str], statuses: tuple[TaskStatus, ...], *, enqueue: bool = True
) -> None:
    """Queue ``tasks`` (unless their messages were sent already) and let a worker thread run them until
    each is in one of ``statuses``."""
    with harness.worker(threads=2):
        for task_id in tasks if enqueue else ():
            harness.queue.add_task(task_id)
        wait_until(
            lambda: all(_status(harness, task_id) in statuses for task_id in tasks),
            timeout_s=30,
            what=f"tasks {tasks} to finish",
        )


def _status(harness: Harness, task_id: str) -> TaskStatus | None:
    task = harness.store.get_task(task_id)
    return task.status if task is not None else None


def seed(harness: Harness, *, failed_title: str = "Monthly report") -> Seeded:
    """A completed task (a tool call and an answer), a failed one, and a pending one."""
    agent = harness.agent(name="Reporter")
    completed = harness.task(agent, title="Weekly report", context={"script": COMPLETES, "week": 47})
    failed = harness.task(agent, title=failed_title, context={"script": FAILS, **LEAKY_CONTEXT})
    pending = harness.task(agent, title="Not queued yet", priority=8)
    run_tasks(harness, [completed, failed], (TaskStatus.COMPLETED, TaskStatus.FAILED))
    return Seeded(completed, failed, pending)


@pytest.fixture
def seeded(app: Harness) -> Seeded:
    return seed(app)


Waiter = Callable[..., None]
