"""The README's fault matrix: each fault injected into real worker processes on real services.

Postgres outages go through a :class:`TcpProxy` between the workers and the shared server
(the test's own store connects directly); providers are the fake HTTP servers, called by
the official SDKs; every test asserts the end state in the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from taskstore import NewAgent, RunStatus, Task, TaskStatus, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import TcpProxy, WorkerProcess, command_env
from tests.acceptance.test_faults import FAST, sleepy, status_of
from tests.fakes.openai_server import FakeOpenAIServer, openai_error, openai_text
from tests.harness import ORG, Harness, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]

#: Scripted agents run in a worker only when allowed.
SCRIPTED = {"AGENTQ_ALLOW_SCRIPTED": "true"}
#: A reconciler that never runs during a test: what saves a task must be something else.
NO_RECONCILER = {"AGENTQ_RECONCILE_INTERVAL_MS": "3600000"}


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy() as tcp:
        yield tcp


@pytest.fixture
def openai() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def openai_env(postgres_url: str, redis_url: str, server: FakeOpenAIServer, **extra: str) -> dict[str, str]:
    """A worker whose OpenAI provider is ``server``."""
    return command_env(
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        OPENAI_API_KEY="sk-test-key",
        OPENAI_BASE_URL=server.base_url,
        **FAST,
        **extra,
    )


def openai_task(app: Harness, **agent: Any) -> tuple[str, str]:
    """An OpenAI agent and a task for it, enqueued; returns ``(agent_id, task_id)``."""
    agent_id = app.agent(provider="openai", model="gpt-4o-mini", allowed_tools=(), **agent)
    task_id = app.task(agent_id)
    app.queue.add_task(task_id)
    return agent_id, task_id


def run_statuses(store: PostgresTaskStore, task_id: str) -> list[RunStatus]:
    return [run.status for run in store.get_runs(task_id)]


def wait_for(
    store: PostgresTaskStore,
    task_id: str,
    worker: WorkerProcess,
    statuses: tuple[TaskStatus, ...] = (TaskStatus.COMPLETED, TaskStatus.FAILED),
    *,
    timeout_s: float = 45,
) -> Task:
    """Wait until the task reaches one of ``statuses``; fail with the worker's log otherwise."""
    try:
        wait_until(lambda: status_of(store, task_id) in statuses, timeout_s=timeout_s, what=f"task {task_id}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; worker log:\n{worker.log()[-4000:]}") from exc
    task = store.get_task(task_id)
    assert task is not None, task_id
    return task


def hold(seconds: float) -> None:
    """Keep a fault in place for ``seconds`` (the fault's length, not a wait for a condition)."""
    time.sleep(seconds)


@pytest.mark.timeout(240)
def test_a_45_s_postgres_outage_during_the_final_write_ends_with_the_task_completed_once(
    app: Harness,
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    proxy: TcpProxy,
    workers: Callable[..., WorkerProcess],
) -> None:
    env = command_env(DATABASE_URL=proxy.through(postgres_url), REDIS_URL=redis_url, **FAST, **SCRIPTED)
    worker = workers(env)
    worker.wait_ready()
    task_id = app.task(context=sleepy(3000))
    app.queue.add_task(task_id)
    wait_until(lambda: status_of(app.store, task_id) == TaskStatus.RUNNING, what="the task to start")

    proxy.cut()  # the answer arrives while the database is unreachable
    hold(45)
    assert status_of(app.store, task_id) == TaskStatus.RUNNING
    proxy.restore()

    task = wait_for(postgres_store, task_id, worker, (TaskStatus.COMPLETED,), timeout_s=120)
    assert task.status == TaskStatus.COMPLETED
    assert run_statuses(postgres_store, task_id).count(RunStatus.COMPLETED) == 1
    assert worker.process.poll() is None


@pytest.mark.timeout(150)
def test_a_postgres_outage_during_the_claim_puts_the_message_back(
    app: Harness,
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    proxy: TcpProxy,
    workers: Callable[..., WorkerProcess],
) -> None:
    env = command_env(
        DATABASE_URL=proxy.through(postgres_url), REDIS_URL=redis_url, **{**FAST, **NO_RECONCILER}, **SCRIPTED
    )
    worker = workers(env)
    worker.wait_ready()
    queue_key = f"{app.broker.namespace}:{app.kinds['general'].queue_name}"  # type: ignore[attr-defined]
    client = app.broker.client  # type: ignore[attr-defined]

    proxy.cut()
    task_id = app.task()
    app.queue.add_task(task_id)  # the producer reaches the database directly
    wait_until(lambda: client.llen(queue_key) == 0, what="the worker to fetch the message")
    fetched = len(worker.log())
    wait_until(
        lambda: "unavailable" in worker.log()[fetched:].lower(),
        timeout_s=60,
        what="the claim to fail on the unreachable database",
    )
    assert status_of(app.store, task_id) == TaskStatus.QUEUED
    proxy.restore()

    task = wait_for(postgres_store, task_id, worker, (TaskStatus.COMPLETED,), timeout_s=60)
    assert task.attempts == 1
    assert run_statuses(postgres_store, task_id) == [RunStatus.COMPLETED]


def test_a_nul_in_the_model_answer_is_removed_and_the_task_completes(
    app: Harness,
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    openai: FakeOpenAIServer,
    workers: Callable[..., WorkerProcess],
) -> None:
    openai.enqueue(openai_text("before\u0000after"))
    worker = workers(openai_env(postgres_url, redis_url, openai))
    _, task_id = openai_task(app)

    task = wait_for(postgres_store, task_id, worker)
    assert task.status == TaskStatus.COMPLETED, task.error
    assert task.result is not None and task.result["output"] == "beforeafter"
    assert run_statuses(postgres_store, task_id) == [RunStatus.COMPLETED]


def test_a_429_with_an_absurd_retry_after_postpones_by_the_cap_and_completes(
    app: Harness,
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    openai: FakeOpenAIServer,
    workers: Callable[..., WorkerProcess],
) -> None:
    openai.enqueue(
        openai_error(429, "slow down", type="rate_limit_exceeded", headers={"retry-after": "100000000"}),
        openai_text("made it"),
    )
    worker = workers(openai_env(postgres_url, redis_url, openai, AGENTQ_MAX_POSTPONE_MS="2000"))
    _, task_id = openai_task(app)

    task = wait_for(postgres_store, task_id, worker)
    assert task.status == TaskStatus.COMPLETED, task.error
    assert task.attempts == 1 and task.postponed_count == 1
    assert task.result is not None and task.result["output"] == "made it"
    assert len(openai.requests) == 2
    log = worker.log()
    assert "OverflowError" not in log
    assert f"Job {task_id} postponed for 2000ms" in log  # clamped to AGENTQ_MAX_POSTPONE_MS


def test_provider_5xx_answers_are_retried_with_backoff_until_the_task_completes(
    app: Harness,
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    openai: FakeOpenAIServer,
    workers: Callable[..., WorkerProcess],
) -> None:
    openai.enqueue(
        openai_error(500, "internal error"),
        openai_error(503, "overloaded"),
        openai_text("third time lucky"),
    )
    worker = workers(openai_env(postgres_url, redis_url, openai, AGENTQ_BACKOFF_MS="500"))
    _, task_id = openai_task(app)

    task = wait_for(postgres_store, task_id, worker)
    assert task.status == TaskStatus.COMPLETED, task.error
    assert task.attempts == 3 and task.result is not None and task.result["output"] == "third time lucky"
    runs = postgres_store.get_runs(task_id)
    assert [run.status for run in runs] == [RunStatus.FAILED, RunStatus.FAILED, RunStatus.COMPLETED]
    assert "500" in (runs[0].error or "") and "503" in (runs[1].error or "")
    first_gap = (runs[1].started_at - runs[0].started_at).total_seconds()
    second_gap = (runs[2].started_at - runs[1].started_at).total_seconds()
    assert first_gap >= 0.5 and second_gap >= 1.0, (first_gap, second_gap)


def test_a_foreign_base_url_fails_the_task_at_once_and_the_key_is_never_sent(
    app: Harness,
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    openai: FakeOpenAIServer,
    workers: Callable[..., WorkerProcess],
) -> None:
    with FakeOpenAIServer() as foreign:
        foreign.enqueue(openai_text("I have your key now"))
        env = openai_env(postgres_url, redis_url, openai, AGENTQ_ALLOWED_BASE_URLS=openai.url)
        worker = workers(env)
        agent_id, task_id = openai_task(app, name="exfiltrator", base_url=foreign.base_url)

        task = wait_for(postgres_store, task_id, worker)
        assert task.status == TaskStatus.FAILED, task.result
        assert task.attempts == 1
        assert task.error is not None and foreign.base_url in task.error
        assert agent_id in task.error or "exfiltrator" in task.error, task.error
        assert foreign.requests == [] and openai.requests == []


def test_a_task_of_an_unknown_kind_is_failed_and_the_reconciler_pass_goes_on(
    app: Harness,
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    workers: Callable[..., WorkerProcess],
) -> None:
    now = utcnow()
    ghost = postgres_store.create_agent(NewAgent(organization_id=ORG, name="ghost agent"), now=now).id
    bad = app.task(ghost)
    good = [app.task() for _ in range(3)]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE ai_agents SET kind = 'no_such_kind' WHERE id = %s", (ghost,))
        # Queued without a message, as if inserted straight into the table; the bad one is the oldest.
        for age, task_id in enumerate([bad, *good][::-1]):
            conn.execute(
                "UPDATE ai_agent_tasks SET status = 'queued', queued_at = now() - make_interval(mins => %s)"
                " WHERE id = %s",
                (10 + age, task_id),
            )
    worker = workers(command_env(DATABASE_URL=postgres_url, REDIS_URL=redis_url, **FAST, **SCRIPTED))

    wait_until(
        lambda: all(status_of(app.store, task_id) == TaskStatus.COMPLETED for task_id in good),
        timeout_s=45,
        what="the good tasks to be re-enqueued and completed",
    )
    task = wait_for(postgres_store, bad, worker, (TaskStatus.FAILED,), timeout_s=20)
    assert task.error is not None and "no_such_kind" in task.error, task.error
    assert postgres_store.get_runs(bad) == []
    assert "Reconciliation failed" not in worker.log()  # no pass was cut short by the bad row


def test_a_redis_flush_loses_no_task_and_runs_none_twice(
    app: Harness,
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    workers: Callable[..., WorkerProcess],
) -> None:
    workers(command_env(DATABASE_URL=postgres_url, REDIS_URL=redis_url, **FAST, **SCRIPTED)).wait_ready()
    running = app.task(context=sleepy(2500))
    app.queue.add_task(running)
    wait_until(lambda: status_of(app.store, running) == TaskStatus.RUNNING, what="the long task to start")
    waiting = [app.task(context=sleepy(200)) for _ in range(5)]
    for task_id in waiting:
        app.queue.add_task(task_id, delay_ms=1500)

    app.broker.client.flushdb()  # type: ignore[attr-defined]  # every message, ack set and key is gone

    everything = [running, *waiting]
    wait_until(
        lambda: all(status_of(app.store, task_id) == TaskStatus.COMPLETED for task_id in everything),
        timeout_s=60,
        what="every task to complete after the flush",
    )
    for task_id in everything:
        assert run_statuses(postgres_store, task_id).count(RunStatus.COMPLETED) == 1, task_id
