"""The offline ``scripted`` provider runs in a worker only with ``AGENTQ_ALLOW_SCRIPTED=true``."""

from __future__ import annotations

import pytest

from taskstore import NewAgent, RunStatus, TaskStatus
from taskstore.postgres import PostgresTaskStore
from tests.harness import ORG, Harness, redis_harness, wait_until

pytestmark = pytest.mark.integration

ENDED = (TaskStatus.COMPLETED, TaskStatus.FAILED)


def run_scripted_task(app: Harness) -> str:
    agent_id = app.agent(name="scripted agent")  # the harness's agents are scripted
    task_id = app.task(agent_id, title="Say hi", context={"script": [{"answer": "hi"}]})
    app.queue.add_task(task_id)
    with app.worker(threads=1):
        wait_until(lambda: app.store.get_task(task_id).status in ENDED, what="the task to end")  # type: ignore[union-attr]
    return task_id


def test_without_the_setting_a_scripted_task_fails_at_once_saying_what_to_set(
    postgres_store: PostgresTaskStore, redis_url: str
) -> None:
    with redis_harness(postgres_store, redis_url, allow_scripted=False) as app:
        task_id = run_scripted_task(app)
        job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.FAILED
    assert job.attempts_made == 1 and [run.status for run in job.runs] == [RunStatus.FAILED]
    assert "AGENTQ_ALLOW_SCRIPTED=true" in (job.failed_reason or "")


def test_with_the_setting_a_scripted_task_runs(postgres_store: PostgresTaskStore, redis_url: str) -> None:
    with redis_harness(postgres_store, redis_url, allow_scripted=True) as app:
        task_id = run_scripted_task(app)
        job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.COMPLETED, job and job.failed_reason
    assert job.result is not None and job.result["output"] == "hi"


def test_a_new_agent_is_no_longer_scripted_by_default() -> None:
    agent = NewAgent(organization_id=ORG, name="default")
    assert (agent.provider, agent.model) == ("openai", "gpt-4o-mini")
