"""Fault injection with real processes and services; every test asserts the end state in the database."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from middleware.task_lifecycle import QUEUED_OPTION
from taskstore import RunStatus, StoreUnavailable, TaskStatus, TaskStore
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import ThrowawayRedis, WorkerProcess, command_env
from tests.harness import Harness, redis_harness, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]

#: Short intervals so faults are detected within seconds.
FAST = {"AGENTQ_STALLED_INTERVAL_MS": "2000", "AGENTQ_RECONCILE_INTERVAL_MS": "1000"}


@pytest.fixture
def env(postgres_url: str, redis_url: str) -> dict[str, str]:
    return command_env(DATABASE_URL=postgres_url, REDIS_URL=redis_url, **FAST)


def status_of(store: TaskStore, task_id: str) -> TaskStatus | None:
    try:
        task = store.get_task(task_id)
    except StoreUnavailable:
        return None  # the database is restarting
    return task.status if task else None


def sleepy(ms: int, answer: str = "done") -> dict[str, Any]:
    return {"script": [{"answer": answer, "sleep_ms": ms}]}


def test_a_worker_killed_mid_task_is_detected_and_the_task_completes_elsewhere(
    app: Harness, env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    first = workers(env, "doomed")
    first.wait_ready()
    task_id = app.task(context=sleepy(5000))
    app.queue.add_task(task_id)
    wait_until(lambda: status_of(app.store, task_id) == TaskStatus.RUNNING, what="the task to start")

    first.kill()
    second = workers(env, "survivor")

    wait_until(
        lambda: status_of(app.store, task_id) == TaskStatus.COMPLETED,
        timeout_s=45,
        what="completion elsewhere",
    )
    task = app.store.get_task(task_id)
    assert task is not None and task.stalled_count == 1 and task.attempts == 1
    assert [run.status for run in app.store.get_runs(task_id)] == [RunStatus.STALLED, RunStatus.COMPLETED]
    assert f"[AgentTaskQueue] ⚠ Job {task_id} stalled - worker may have crashed" in second.log()


def test_sigterm_during_a_task_lets_it_finish_and_the_worker_exits_zero(
    app: Harness, env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    worker = workers(env)
    worker.wait_ready()
    task_id = app.task(context=sleepy(3000))
    app.queue.add_task(task_id)
    wait_until(lambda: status_of(app.store, task_id) == TaskStatus.RUNNING, what="the task to start")

    assert worker.terminate() == 0

    assert status_of(app.store, task_id) == TaskStatus.COMPLETED
    assert [run.status for run in app.store.get_runs(task_id)] == [RunStatus.COMPLETED]
    assert f"[AgentTaskQueue] ✓ Job {task_id} completed" in worker.log()


def test_a_task_cut_off_at_the_shutdown_deadline_is_recovered_as_stalled(
    app: Harness, env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    impatient = workers({**env, "AGENTQ_SHUTDOWN_TIMEOUT_MS": "300"}, "impatient")
    impatient.wait_ready()
    task_id = app.task(context=sleepy(2000))
    app.queue.add_task(task_id)
    wait_until(lambda: status_of(app.store, task_id) == TaskStatus.RUNNING, what="the task to start")

    assert impatient.terminate() == 0
    assert status_of(app.store, task_id) == TaskStatus.RUNNING
    assert f"Job {task_id} cut off by shutdown" in impatient.log()
    workers(env, "next")

    wait_until(lambda: status_of(app.store, task_id) == TaskStatus.COMPLETED, timeout_s=45, what="recovery")
    assert app.store.get_task(task_id).stalled_count == 1  # type: ignore[union-attr]


def test_a_task_failing_every_time_fails_after_three_attempts_with_exponential_backoff(
    app: Harness, env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    worker = workers(env)
    task_id = app.task(context={"script": [{"fail": "upstream exploded"}]})
    app.queue.add_task(task_id)

    wait_until(
        lambda: status_of(app.store, task_id) == TaskStatus.FAILED, timeout_s=45, what="the dead letter"
    )

    job = app.queue.get_job(task_id)
    assert job is not None and job.attempts_made == 3
    assert job.failed_reason is not None and "upstream exploded" in job.failed_reason
    assert len(job.stacktrace) == 3 and "ProviderError" in job.stacktrace[-1]
    starts = [run.started_at for run in job.runs]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(starts)]
    assert gaps[0] >= 2.0 and gaps[1] >= 4.0, gaps
    log = worker.log()
    assert log.count(f"[AgentTaskQueue] ✗ Job {task_id} failed:") == 3
    assert f"[AgentTaskQueue] ⚠ Job {task_id} moved to dead letter queue after 3 attempts" in log


def test_a_duplicate_message_during_a_run_neither_runs_twice_nor_reruns_it(
    app: Harness, env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    workers(env).wait_ready()
    task_id = app.task(context=sleepy(1500))
    app.queue.add_task(task_id)
    wait_until(lambda: status_of(app.store, task_id) == TaskStatus.RUNNING, what="the task to start")
    duplicate: dict[str, Any] = {QUEUED_OPTION: True}

    app.kinds["general"].send_with_options(args=(task_id,), **duplicate)
    wait_until(lambda: status_of(app.store, task_id) == TaskStatus.COMPLETED, what="completion")
    app.kinds["general"].send_with_options(args=(task_id,), **duplicate)
    sentinel = app.task()
    app.queue.add_task(sentinel)
    wait_until(lambda: status_of(app.store, sentinel) == TaskStatus.COMPLETED, what="the sentinel")

    assert [run.status for run in app.store.get_runs(task_id)] == [RunStatus.COMPLETED]


def test_a_redis_restart_without_persistence_loses_no_task(
    postgres_store: PostgresTaskStore, postgres_url: str, workers: Callable[..., WorkerProcess]
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = ThrowawayRedis()
    try:
        with redis_harness(postgres_store, server.url) as app:
            env = command_env(DATABASE_URL=postgres_url, REDIS_URL=server.url, **FAST)
            workers(env).wait_ready()
            running = app.task(context=sleepy(2500))
            app.queue.add_task(running)
            wait_until(
                lambda: status_of(app.store, running) == TaskStatus.RUNNING, what="the long task to start"
            )
            waiting = [app.task(context=sleepy(200)) for _ in range(5)]
            for task_id in waiting:
                app.queue.add_task(task_id, delay_ms=1500)

            server.kill()  # every message is gone
            server.start()

            everything = [running, *waiting]
            wait_until(
                lambda: all(status_of(app.store, task_id) == TaskStatus.COMPLETED for task_id in everything),
                timeout_s=60,
                what="every task to complete after the Redis restart",
            )
            for task_id in everything:
                statuses = [run.status for run in app.store.get_runs(task_id)]
                assert statuses.count(RunStatus.COMPLETED) == 1, (task_id, statuses)
    finally:
        server.close()


def _pg_cluster() -> list[str] | None:
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main"]


def test_a_postgres_restart_mid_run_leaves_no_task_stuck(
    app: Harness, env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    cluster = _pg_cluster()
    if cluster is None:
        pytest.skip("no local PostgreSQL cluster to restart")
    worker = workers(env)
    worker.wait_ready()
    task_id = app.task(context=sleepy(2500))
    app.queue.add_task(task_id)
    wait_until(lambda: status_of(app.store, task_id) == TaskStatus.RUNNING, what="the task to start")

    subprocess.run([*cluster, "restart", "--", "-m", "fast"], check=True, timeout=120, capture_output=True)

    wait_until(lambda: status_of(app.store, task_id) == TaskStatus.COMPLETED, timeout_s=60, what="completion")
    after = app.task()
    app.queue.add_task(after)
    wait_until(
        lambda: status_of(app.store, after) == TaskStatus.COMPLETED, timeout_s=30, what="the next task"
    )
    assert worker.process.poll() is None
