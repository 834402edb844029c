"""Runs in flight are not threads: one `dramatiq actors -p 1 -t 8` keeps QUEUE_CONCURRENCY runs waiting on
their models at once (issue 19's must-show)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from taskstore import RunStatus, TaskStatus
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import WorkerProcess, command_env
from tests.fakes.fast_openai_server import FastOpenAIServer
from tests.harness import ORG, Harness, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]

#: Seconds every model call takes.
MODEL_CALL_S = 3.0
TASKS = 200


@pytest.fixture
def server() -> Iterator[FastOpenAIServer]:
    with FastOpenAIServer(delay_s=MODEL_CALL_S, content="done") as running:
        yield running


def test_two_hundred_three_second_runs_wait_at_once_on_eight_threads_and_each_runs_once(
    app: Harness,
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    server: FastOpenAIServer,
    tmp_path: Path,
) -> None:
    env = command_env(
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        OPENAI_API_KEY="sk-test-key",
        OPENAI_BASE_URL=server.base_url,
        QUEUE_CONCURRENCY=str(TASKS),
        AGENTQ_RATE_LIMIT_MAX="0",
    )
    worker = WorkerProcess(env, tmp_path / "worker.log", threads=8)  # dramatiq actors -p 1 -t 8
    try:
        worker.wait_ready()
        agent = app.agent(provider="openai", model="gpt-4o-mini")
        tasks = app.queue.create_tasks(
            [{"agent_id": agent, "organization_id": ORG, "title": f"run {index}"} for index in range(TASKS)]
        )
        began = time.monotonic()
        app.queue.add_tasks([task.id for task in tasks])

        def all_completed() -> bool:
            return all(
                (row := postgres_store.get_task(task.id)) is not None and row.status == TaskStatus.COMPLETED
                for task in tasks
            )

        wait_until(all_completed, timeout_s=90, interval_s=0.25, what=f"the {TASKS} tasks to complete")
        took = time.monotonic() - began
    finally:
        worker.close()
    log = worker.log()

    stats = server.stats()
    print(f"{TASKS} runs of {MODEL_CALL_S:g} s on 8 threads: {took:.1f} s; most calls waiting at once:"
          f" {stats.max_in_flight}")  # fmt: skip
    # Many more calls waited at once than there are threads: the runs were on the event loop.
    assert stats.max_in_flight >= TASKS // 2, stats
    # Each exactly once: one model call, one attempt, one completed run per task.
    assert stats.requests == TASKS, stats
    for task in tasks:
        row = postgres_store.get_task(task.id)
        assert row is not None and row.attempts == 1
        assert [run.status for run in postgres_store.get_runs(task.id)] == [RunStatus.COMPLETED]
    # One lifecycle line per task, and no line per HTTP request of the SDK (httpx logs those at INFO).
    assert log.count("✓ Job") == TASKS
    assert "HTTP Request:" not in log


def test_a_run_on_the_loop_past_its_time_limit_fails_naming_the_limit_and_frees_its_slot(
    app: Harness,
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    with FastOpenAIServer(delay_s=30, content="too late") as slow:
        env = command_env(
            DATABASE_URL=postgres_url,
            REDIS_URL=redis_url,
            OPENAI_API_KEY="sk-test-key",
            OPENAI_BASE_URL=slow.base_url,
            QUEUE_CONCURRENCY="1",  # one slot: the second run starts only once the first gave it back
            AGENTQ_RATE_LIMIT_MAX="0",
            AGENTQ_TASK_TIME_LIMIT_MS="1500",
        )
        worker = WorkerProcess(env, tmp_path / "worker.log", threads=2)
        try:
            worker.wait_ready()
            agent = app.agent(provider="openai", model="gpt-4o-mini")
            tasks = app.queue.create_tasks(
                [{"agent_id": agent, "organization_id": ORG, "title": f"slow {index}"} for index in range(2)]
            )
            with psycopg.connect(postgres_url, autocommit=True) as conn:  # one attempt each, no retry
                conn.execute("UPDATE ai_agent_tasks SET max_attempts = 1")
            app.queue.add_tasks([task.id for task in tasks])

            def both_failed() -> bool:
                return all(
                    (row := postgres_store.get_task(task.id)) is not None and row.status == TaskStatus.FAILED
                    for task in tasks
                )

            wait_until(both_failed, timeout_s=30, interval_s=0.2, what="both slow runs to fail")
        finally:
            worker.close()
        stats = slow.stats()

    message = "the attempt ran longer than its time limit of 1500 ms"
    for task in tasks:
        row = postgres_store.get_task(task.id)
        assert row is not None and row.attempts == 1 and row.error == message
        assert [(run.status, run.error) for run in postgres_store.get_runs(task.id)] == [
            (RunStatus.FAILED, message)
        ]
    # Neither call was answered: each was cut off at the limit, one after the other in the one slot.
    assert (stats.requests, stats.max_in_flight) == (0, 1)
