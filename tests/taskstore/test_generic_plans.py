"""The drain's functions are planned once per session, not on every call (migration 0010_generic_plans).

PL/pgSQL re-plans a statement with parameters on every call while the planner judges the custom plan
cheaper, and for the claim and completion batches it always does: re-planning cost more server CPU
than running them. ``SET plan_cache_mode = force_generic_plan`` on the function keeps one plan per
session. ``CREATE OR REPLACE FUNCTION`` replaces a function's settings too, so a later migration that
installs ``functions.sql`` without the clause would silently bring the cost back: this test names the
functions of the drain instead of reading the clause from ``functions.sql``.
"""

from __future__ import annotations

import psycopg
import pytest

from taskstore.sql_store import signatures

pytestmark = pytest.mark.integration

#: Every function a task's claim, run and completion calls, and the producer path's.
DRAIN = (
    "agentq_claim",
    "agentq_claim_many",
    "agentq_complete_many",
    "agentq_finish",
    "agentq_postpone",
    "agentq_record_step",
    "agentq_record_steps",
    "agentq_start_step",
    "agentq_finish_step",
    "agentq_create_runnable_task",
    "agentq_create_tasks",
    "agentq_queue_runnable_task",
    "agentq_queue_runnable_tasks",
    "agentq_mark_queued",
    "agentq_mark_queued_many",
)
#: Functions whose filters are ranges or optional: their plans depend on the values, so they keep per-call plans.
PER_CALL = ("agentq_cleanup", "agentq_list_tasks", "agentq_overview", "agentq_recover_stalled")


def _settings(url: str, name: str) -> list[str]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT proconfig FROM pg_proc WHERE proname = %s", (name,)).fetchone()
    assert row is not None, f"{name} is not installed"
    return list(row[0] or [])


@pytest.mark.parametrize("name", DRAIN)
def test_the_drains_functions_keep_one_plan_per_session(postgres_url: str, name: str) -> None:
    assert name in signatures()

    settings = _settings(postgres_url, name)

    assert "plan_cache_mode=force_generic_plan" in settings
    assert "search_path=public" in settings


@pytest.mark.parametrize("name", PER_CALL)
def test_functions_filtering_by_range_are_planned_per_call(postgres_url: str, name: str) -> None:
    assert not any(setting.startswith("plan_cache_mode=") for setting in _settings(postgres_url, name))


def test_a_generic_claim_still_claims_only_queued_tasks_by_id(postgres_url: str) -> None:
    """Run past the planner's five custom plans, so the sixth call onwards uses the generic one."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("TRUNCATE ai_agent_task_steps, ai_agent_task_runs, ai_agent_tasks, ai_agents CASCADE")
        agent = conn.execute(
            "INSERT INTO ai_agents (id, organization_id, name, provider, model, kind)"
            " VALUES (gen_random_uuid(), gen_random_uuid(), 'a', 'scripted', 'scripted-1', 'general') RETURNING id"
        ).fetchone()
        assert agent is not None
        ids = [
            row[0]
            for row in conn.execute(
                "INSERT INTO ai_agent_tasks (id, agent_id, organization_id, title, status)"
                " SELECT gen_random_uuid(), a.id, a.organization_id, 't' || g, CASE WHEN g % 2 = 0 THEN"
                " 'queued' ELSE 'pending' END FROM ai_agents a, generate_series(1, 16) g RETURNING id"
            ).fetchall()
        ]
        claimed = []
        for task_id in ids:
            rows = conn.execute(
                "SELECT (r.task).id FROM agentq_claim_many(%s::uuid[], ARRAY[gen_random_uuid()], ARRAY['w'],"
                " ARRAY[now() + interval '1 minute'], ARRAY[now()]) r",
                ([task_id],),
            ).fetchall()
            claimed += [row[0] for row in rows]
        statuses = dict(conn.execute("SELECT id, status FROM ai_agent_tasks").fetchall())

    assert len(claimed) == 8
    assert all(statuses[task_id] == "running" for task_id in claimed)
    assert sorted(task_id for task_id, status in statuses.items() if status == "pending") == sorted(
        set(ids) - set(claimed)
    )
