"""Tenants sealed off on the real PostgreSQL: what a member (``authenticated``, as PostgREST runs them) may
write in ``ai_agent_tasks``, and the worker's own check that a task runs only its organization's agent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from taskstore import TaskStatus
from taskstore.postgres import PostgresTaskStore
from taskstore.schema import MIGRATIONS, render_all
from tests.conftest import TRUNCATE
from tests.harness import ORG, OTHER_ORG, redis_harness, wait_until
from tests.services import temporary_database

pytestmark = pytest.mark.integration

ORG_A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
ORG_B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
ALICE = "a11ce000-0000-4000-8000-000000000001"  # member of org A only

Conn = psycopg.Connection[tuple[Any, ...]]


def seed(conn: Conn) -> dict[str, str]:
    """Org A (two agents, a pending task; Alice is a member) and org B (an agent and a task)."""
    conn.execute(
        "INSERT INTO ai_organization_members (organization_id, user_id) VALUES (%s, %s)", (ORG_A, ALICE)
    )
    ids: dict[str, str] = {}
    for name, org in (("agent_a", ORG_A), ("agent_a2", ORG_A), ("agent_b", ORG_B)):
        row = conn.execute(
            "INSERT INTO ai_agents (organization_id, name) VALUES (%s, %s) RETURNING id", (org, name)
        ).fetchone()
        assert row is not None
        ids[name] = str(row[0])
    for name, org, agent in (("task_a", ORG_A, ids["agent_a"]), ("task_b", ORG_B, ids["agent_b"])):
        row = conn.execute(
            "INSERT INTO ai_agent_tasks (agent_id, organization_id, title) VALUES (%s, %s, 't') RETURNING id",
            (agent, org),
        ).fetchone()
        assert row is not None
        ids[name] = str(row[0])
    return ids


@pytest.fixture
def rls(postgres_url: str) -> Iterator[tuple[Conn, dict[str, str]]]:
    """An owner connection (autocommit) to the migrated database, seeded by :func:`seed`."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(TRUNCATE + ", ai_organization_members")
        yield conn, seed(conn)


def as_member(conn: Conn, user: str = ALICE) -> None:
    """What PostgREST does for a signed-in user's request (inside its transaction)."""
    conn.execute("SET LOCAL ROLE authenticated")
    claims = json.dumps({"sub": user, "role": "authenticated"})
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))


def snapshot(conn: Conn) -> list[tuple[Any, ...]]:
    """Every task row, as the owner sees it."""
    return conn.execute("SELECT * FROM ai_agent_tasks ORDER BY id").fetchall()


def refused(conn: Conn, statement: str, params: tuple[Any, ...]) -> None:
    """``statement``, run as Alice, fails with a privilege/policy error and changes nothing."""
    before = snapshot(conn)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        as_member(conn)
        conn.execute(statement, params)
    assert snapshot(conn) == before


# --- what a member may not do ---------------------------------------------------------------------------


def test_a_member_cannot_point_their_task_at_another_organizations_agent(
    rls: tuple[Conn, dict[str, str]],
) -> None:
    conn, ids = rls
    refused(conn, "UPDATE ai_agent_tasks SET agent_id = %s WHERE id = %s", (ids["agent_b"], ids["task_a"]))


def test_a_member_cannot_move_their_task_to_an_organization_they_are_not_in(
    rls: tuple[Conn, dict[str, str]],
) -> None:
    conn, ids = rls
    task = ids["task_a"]
    refused(conn, "UPDATE ai_agent_tasks SET organization_id = %s WHERE id = %s", (ORG_B, task))
    refused(
        conn,
        "UPDATE ai_agent_tasks SET organization_id = %s, agent_id = %s WHERE id = %s",
        (ORG_B, ids["agent_b"], task),
    )


@pytest.mark.parametrize(
    "assignment",
    [
        "status = 'queued'",
        "status = 'completed'",
        "attempts = 0",
        "max_attempts = 100",
        "stalled_count = 0",
        'result = \'{"output": "forged"}\'',
        "error = 'forged'",
        "queued_at = now()",
        "run_at = now()",
        "next_run_at = now()",
        "schedule_cron = '* * * * *'",
        "schedule_timezone = 'UTC'",
        "task_type = 'scheduled'",
        "worker_id = 'w'",
        "lease_expires_at = now()",
        "cost_usd = 0",
        "cancel_requested_at = now()",
        "archived_at = now()",
    ],
)
def test_a_member_cannot_write_worker_owned_columns(
    rls: tuple[Conn, dict[str, str]], assignment: str
) -> None:
    conn, ids = rls
    refused(conn, f"UPDATE ai_agent_tasks SET {assignment} WHERE id = %s", (ids["task_a"],))


@pytest.mark.parametrize(
    ("columns", "values"),
    [
        ("status", "'queued'"),
        ("status", "'running'"),
        ("task_type", "'scheduled'"),
        ("status, queued_at", "'queued', now()"),
        ("attempts", "0"),
        ("max_attempts", "50"),
        ("schedule_cron, next_run_at", "'* * * * *', now()"),
        ("result", "'{}'"),
    ],
)
def test_a_member_inserts_no_worker_owned_column(
    rls: tuple[Conn, dict[str, str]], columns: str, values: str
) -> None:
    conn, ids = rls
    statement = (
        f"INSERT INTO ai_agent_tasks (agent_id, organization_id, title, {columns})"
        f" VALUES (%s, %s, 'x', {values})"
    )
    refused(conn, statement, (ids["agent_a"], ORG_A))


def test_a_member_cannot_insert_with_another_organizations_agent_or_into_another_organization(
    rls: tuple[Conn, dict[str, str]],
) -> None:
    conn, ids = rls
    insert = "INSERT INTO ai_agent_tasks (agent_id, organization_id, title) VALUES (%s, %s, 'x')"
    refused(conn, insert, (ids["agent_b"], ORG_A))
    refused(conn, insert, (ids["agent_b"], ORG_B))
    refused(conn, insert, (ids["agent_a"], ORG_B))


# --- what a member may do -------------------------------------------------------------------------------


def test_a_member_creates_a_pending_task_and_edits_its_own_columns(rls: tuple[Conn, dict[str, str]]) -> None:
    conn, ids = rls
    with conn.transaction():
        as_member(conn)
        row = conn.execute(
            "INSERT INTO ai_agent_tasks (agent_id, organization_id, title, description, context, priority,"
            " status, task_type) VALUES (%s, %s, 'mine', 'd', '{\"week\": 47}', 7, 'pending', 'adhoc')"
            " RETURNING id, status",
            (ids["agent_a"], ORG_A),
        ).fetchone()
        assert row is not None and row[1] == "pending"
        updated = conn.execute(
            "UPDATE ai_agent_tasks SET title = 'renamed', description = 'more', priority = 9,"
            " context = '{\"week\": 48}', agent_id = %s WHERE id IN (%s, %s)",
            (ids["agent_a2"], row[0], ids["task_a"]),
        ).rowcount
        hidden = conn.execute(
            "UPDATE ai_agent_tasks SET title = 'hijacked' WHERE id = %s", (ids["task_b"],)
        ).rowcount

    assert (updated, hidden) == (2, 0)
    mine = conn.execute(
        "SELECT title, description, priority, context, agent_id::text, status"
        " FROM ai_agent_tasks WHERE id = %s",
        (row[0],),
    ).fetchone()
    assert mine == ("renamed", "more", 9, {"week": 48}, ids["agent_a2"], "pending")


def test_the_service_role_and_the_owner_still_write_every_column(rls: tuple[Conn, dict[str, str]]) -> None:
    conn, ids = rls
    with conn.transaction():
        conn.execute("SET LOCAL ROLE service_role")
        conn.execute("SELECT set_config('request.jwt.claims', '{\"role\": \"service_role\"}', true)")
        conn.execute(
            "UPDATE ai_agent_tasks SET status = 'queued', queued_at = now(), attempts = 0 WHERE id = %s",
            (ids["task_a"],),
        )
    conn.execute("UPDATE ai_agent_tasks SET status = 'running', attempts = 1 WHERE id = %s", (ids["task_a"],))
    row = conn.execute(
        "SELECT status, attempts FROM ai_agent_tasks WHERE id = %s", (ids["task_a"],)
    ).fetchone()
    assert row == ("running", 1)


def test_new_agents_default_to_a_real_provider_on_postgres(rls: tuple[Conn, dict[str, str]]) -> None:
    conn, ids = rls
    row = conn.execute("SELECT provider, model FROM ai_agents WHERE id = %s", (ids["agent_a"],)).fetchone()
    assert row == ("openai", "gpt-4o-mini")


def test_reapplying_every_migration_file_keeps_members_out_of_worker_columns() -> None:
    """Even after the older files (with their table-wide grants) are applied again, the trigger holds."""
    older = render_all("postgres", MIGRATIONS[:-1])
    with temporary_database() as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(render_all("postgres").encode())
        conn.execute(render_all("postgres").encode())
        conn.execute(older.encode())  # 0002's policies and GRANT INSERT, UPDATE ON ai_agent_tasks again
        ids = seed(conn)
        refused(conn, "UPDATE ai_agent_tasks SET status = 'queued' WHERE id = %s", (ids["task_a"],))
        refused(
            conn,
            "UPDATE ai_agent_tasks SET agent_id = %s WHERE id = %s",
            (ids["agent_b"], ids["task_a"]),
        )
        refused(
            conn,
            "INSERT INTO ai_agent_tasks (agent_id, organization_id, title, status)"
            " VALUES (%s, %s, 'x', 'queued')",
            (ids["agent_a"], ORG_A),
        )


# --- the step ledger ------------------------------------------------------------------------------------


def with_steps(conn: Conn, ids: dict[str, str]) -> dict[str, str]:
    """One recorded step on each organization's task (written as the owner, as a worker's function does)."""
    steps = {}
    for task in ("task_a", "task_b"):
        row = conn.execute(
            "INSERT INTO ai_agent_task_steps"
            " (task_id, run_id, firing, seq, kind, name, status, input, started_at)"
            " VALUES (%s, gen_random_uuid(), 0, 0, 'llm', 'gpt-4o-mini', 'started', '{}', now())"
            " RETURNING id",
            (ids[task],),
        ).fetchone()
        assert row is not None
        steps[task] = str(row[0])
    return steps


def test_a_member_reads_the_steps_of_their_organizations_tasks_only(rls: tuple[Conn, dict[str, str]]) -> None:
    conn, ids = rls
    steps = with_steps(conn, ids)
    with conn.transaction():
        as_member(conn)
        seen = [row[0] for row in conn.execute("SELECT id::text FROM ai_agent_task_steps")]
        conn.execute("SET LOCAL ROLE anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SELECT id FROM ai_agent_task_steps")

    assert seen == [steps["task_a"]]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO ai_agent_task_steps (task_id, run_id, firing, seq, kind, name, status, started_at)"
        " VALUES ('{task}', gen_random_uuid(), 0, 1, 'tool', 'x', 'completed', now())",
        "UPDATE ai_agent_task_steps SET status = 'completed' WHERE id = '{step}'",
        "DELETE FROM ai_agent_task_steps WHERE id = '{step}'",
    ],
    ids=["insert", "update", "delete"],
)
def test_a_member_cannot_write_the_step_ledger(rls: tuple[Conn, dict[str, str]], statement: str) -> None:
    conn, ids = rls
    steps = with_steps(conn, ids)
    before = conn.execute("SELECT * FROM ai_agent_task_steps ORDER BY id").fetchall()

    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        as_member(conn)
        conn.execute(statement.format(task=ids["task_a"], step=steps["task_a"]).encode())

    assert conn.execute("SELECT * FROM ai_agent_task_steps ORDER BY id").fetchall() == before


def test_members_cannot_call_the_step_functions(rls: tuple[Conn, dict[str, str]]) -> None:
    conn, ids = rls
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        as_member(conn)
        conn.execute("SELECT agentq_get_steps(%s)", (ids["task_a"],))


# --- the worker's own check -----------------------------------------------------------------------------


def test_a_worker_fails_a_task_whose_agent_belongs_to_another_organization(
    postgres_store: PostgresTaskStore, postgres_url: str, redis_url: str
) -> None:
    with redis_harness(postgres_store, redis_url, allow_scripted=True) as app:
        scripted = {"provider": "scripted", "model": "scripted-1"}
        own, foreign = app.agent(**scripted), app.agent(organization_id=OTHER_ORG, **scripted)
        task_id = app.task(own, context={"script": [{"answer": "the other organization's agent ran"}]})
        app.queue.add_task(task_id)
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # past every check: the table owner
            conn.execute("UPDATE ai_agent_tasks SET agent_id = %s WHERE id = %s", (foreign, task_id))

        def ended() -> bool:
            task = postgres_store.get_task(task_id)
            return task is not None and task.status in (TaskStatus.FAILED, TaskStatus.COMPLETED)

        with app.worker():
            wait_until(ended, timeout_s=30, what=f"task {task_id} to end")

    task = postgres_store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.FAILED and task.attempts == 1
    assert task.error == (
        f"task {task_id!r} of organization {ORG!r} names agent {foreign!r} of organization {OTHER_ORG!r}:"
        " a task runs only its own organization's agents"
    )
    assert task.result is None and task.input_tokens == 0
    [run] = postgres_store.get_runs(task_id)
    assert run.status == "failed" and run.transcript is None and run.input_tokens == 0
