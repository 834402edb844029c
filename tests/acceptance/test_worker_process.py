"""The real commands as a user runs them: `dramatiq actors`, `agentq migrate`, `agentq demo`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from taskstore import NewAgent, NewTask, TaskStatus, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import command_env
from tests.harness import ORG, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
#: The installed console script, as a user runs it.
AGENTQ = [str(Path(sys.executable).with_name("agentq"))]


@pytest.fixture
def worker_env(postgres_store: PostgresTaskStore, postgres_url: str, redis_url: str) -> dict[str, str]:
    return command_env(DATABASE_URL=postgres_url, REDIS_URL=redis_url, QUEUE_CONCURRENCY="4")


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "actors", "--processes", "1", "--threads", "4"],
        cwd=ROOT,
        env=worker_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield process
    # The whole group: killing only the parent would leave its worker process consuming the test's Redis.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    log.close()


def test_dramatiq_actors_runs_tasks_another_process_added_and_sent(
    postgres_store: PostgresTaskStore,
    worker_env: dict[str, str],
    worker: subprocess.Popen[bytes],
    tmp_path: Path,
) -> None:
    now = utcnow()
    general = postgres_store.create_agent(
        NewAgent(provider="scripted", model="scripted-1", organization_id=ORG, name="g"), now=now
    )
    finance = postgres_store.create_agent(
        NewAgent(
            provider="scripted", model="scripted-1", organization_id=ORG, name="f", kind="financial_report"
        ),
        now=now,
    )
    added = postgres_store.create_task(
        NewTask(agent_id=general.id, organization_id=ORG, title="added"), now=now
    )
    sent = postgres_store.create_task(
        NewTask(agent_id=finance.id, organization_id=ORG, title="sent"), now=now
    )
    producer = (
        "import sys\n"
        "from actors import agent_task_queue, financial_report\n"
        "agent_task_queue.add_task(sys.argv[1], 5, 0)\n"
        "financial_report.send(sys.argv[2])\n"
    )

    subprocess.run(
        [sys.executable, "-c", producer, added.id, sent.id], cwd=ROOT, env=worker_env, check=True, timeout=60
    )

    def both_completed() -> bool:
        tasks = [postgres_store.get_task(task_id) for task_id in (added.id, sent.id)]
        return all(task is not None and task.status == TaskStatus.COMPLETED for task in tasks)

    wait_until(
        both_completed, timeout_s=60, interval_s=0.1, what="both tasks to complete under dramatiq actors"
    )
    for task_id in (added.id, sent.id):
        task = postgres_store.get_task(task_id)
        assert task is not None and task.result is not None and task.result["output"]
        [run] = postgres_store.get_runs(task_id)
        assert run.status == "completed" and run.worker_id
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    log = (tmp_path / "worker.log").read_text(encoding="utf-8")
    assert f"[AgentTaskQueue] ✓ Job {added.id} completed" in log
    assert f"[AgentTaskQueue] ✓ Job {sent.id} completed" in log


def test_agentq_migrate_is_safe_to_run_twice(postgres_url: str) -> None:
    from tests.services import temporary_database

    with temporary_database() as fresh:
        env = command_env(DATABASE_URL=fresh)
        agentq = [*AGENTQ, "migrate"]
        first = subprocess.run(
            agentq, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
        )
        second = subprocess.run(
            agentq, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
        )
        assert "applied: 0001_initial" in first.stdout
        assert "schema is up to date" in second.stdout
        store = PostgresTaskStore(fresh)
        try:
            assert store.get_task("00000000-0000-4000-8000-000000000000") is None
        finally:
            store.close()


def test_a_bad_setting_is_one_clear_line_not_a_traceback() -> None:
    env = command_env(REDIS_PORT="abc")

    for command in (AGENTQ, [sys.executable, "-m", "dramatiq", "actors", "--processes", "1"]):
        result = subprocess.run(
            [*command, "stats"] if command is AGENTQ else command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert result.returncode != 0
        assert "REDIS_PORT='abc' is not a port number" in result.stderr
        assert "Traceback" not in result.stderr, result.stderr


def test_the_demo_processes_every_task_to_completed(redis_url: str, tmp_path: Path) -> None:
    env = command_env(REDIS_URL=redis_url, AGENTQ_SQLITE_PATH=str(tmp_path / "demo.db"))

    result = subprocess.run(
        [*AGENTQ, "demo", "--timeout", "60"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("added to queue") == 5
    assert output.count("completed\n") >= 5 or output.count("✓ Job") == 5
    assert "Queue stats: waiting=0, active=0, completed=5, failed=0, delayed=0, paused=0" in output


def test_the_demo_starts_a_throwaway_redis_when_none_answers(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    # Port 1 on localhost: nothing answers there.
    env = command_env(REDIS_URL="redis://127.0.0.1:1/0", AGENTQ_SQLITE_PATH=str(tmp_path / "demo.db"))

    result = subprocess.run(
        [*AGENTQ, "demo", "--timeout", "60"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "started a throwaway redis-server" in output
    assert "completed=5" in output


def test_a_worker_on_a_database_without_the_latest_migration_refuses_to_start(
    redis_url: str, tmp_path: Path
) -> None:
    from taskstore.schema import MIGRATIONS
    from tests.services import temporary_database

    with temporary_database() as fresh:
        latest = MIGRATIONS[-1]
        with psycopg.connect(fresh, autocommit=True) as conn:
            for migration in MIGRATIONS[:-1]:
                conn.execute(migration.path().read_text(encoding="utf-8").encode())
        env = command_env(DATABASE_URL=fresh, REDIS_URL=redis_url)
        log_path = tmp_path / "worker.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "dramatiq", "actors", "--processes", "1", "--threads", "2"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = worker.wait(timeout=60)
            finally:
                if worker.poll() is None:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait(timeout=30)

        output = log_path.read_text(encoding="utf-8", errors="replace")
        assert code != 0, output
        assert f"the database lacks migration(s) {latest.name}: run `agentq migrate`" in output
        assert "Worker process is ready for action." not in output
