"""`periodiq actors` + `dramatiq actors`: one run a minute, even with two schedulers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from taskstore import NewAgent, NewTask, RunStatus, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import ROOT, WorkerProcess, command_env
from tests.harness import ORG, redis_harness, wait_until

# Real cron minutes: up to two minutes of waiting, so more than the suite's 120 s per-test timeout.
pytestmark = [pytest.mark.acceptance, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

PERIODIQ = str(Path(sys.executable).with_name("periodiq"))


def test_an_every_minute_schedule_runs_once_per_minute_under_two_schedulers(
    postgres_store: PostgresTaskStore, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = command_env(DATABASE_URL=postgres_url, REDIS_URL=redis_url)
    agent = postgres_store.create_agent(
        NewAgent(provider="scripted", model="scripted-1", organization_id=ORG, name="cron"), now=utcnow()
    )
    task = postgres_store.create_task(
        NewTask(agent_id=agent.id, organization_id=ORG, title="Every minute", task_type="scheduled"),
        now=utcnow(),
    )
    with redis_harness(postgres_store, redis_url) as app:
        app.queue.add_scheduled_task(task.id, "* * * * *")
    worker = WorkerProcess(env, tmp_path / "worker.log")
    logs = [(tmp_path / f"periodiq-{n}.log").open("wb") for n in range(2)]
    schedulers = [
        subprocess.Popen([PERIODIQ, "actors"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        for log in logs
    ]
    try:
        wait_until(
            lambda: sum(run.status == RunStatus.COMPLETED for run in postgres_store.get_runs(task.id)) >= 2,
            timeout_s=190,
            interval_s=0.5,
            what="two minutes of firings",
        )
        first_two = postgres_store.get_runs(task.id)[:2]
    finally:
        for process in schedulers:
            process.terminate()
            process.wait(timeout=30)
        worker.terminate()
        for log in logs:
            log.close()

    runs = postgres_store.get_runs(task.id)
    minutes = [run.started_at.replace(second=0, microsecond=0) for run in runs]
    assert len(minutes) == len(set(minutes)), f"a minute ran twice: {minutes}"
    assert [run.status for run in first_two] == [RunStatus.COMPLETED, RunStatus.COMPLETED]
    assert (minutes[1] - minutes[0]).total_seconds() == 60
    ticks = [(tmp_path / f"periodiq-{n}.log").read_text() for n in range(2)]
    assert all("agentq_schedule_tick" in text for text in ticks), ticks
