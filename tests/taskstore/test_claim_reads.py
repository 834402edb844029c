"""The drain's transitions find their tasks by primary key, whatever the planner's statistics say.

A burst of new tasks leaves the statistics saying that almost nothing is queued or pending. With a
bare ``status = 'queued'`` beside ``id = ANY(…)`` the planner then read a status index across the whole
backlog on every claim (and the whole pending backlog on every enqueue): the cost of a claim grew with
the queue. These tests build exactly that table (autovacuum off, analysed before the burst) and count
the index and heap tuples each statement reads, from Postgres's own statistics.

The drain's batch functions keep one plan per session (``plan_cache_mode = force_generic_plan``), built at the
session's first call, when the tables may have been nearly empty; the last test grows them under a session
whose plans were built on empty tables and checks that those plans still find rows by key.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from taskstore import NewAgent, new_id, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.services import temporary_database

pytestmark = pytest.mark.integration

#: Tasks in each status of the burst: far more than any statement that finds two tasks by id should read.
BACKLOG = 2_000
#: Most tuples a statement about two tasks may read (their index entries, rows, and the runs' inserts).
FEW = 60
ORG = "00000000-0000-4000-8000-0000000000c1"


def migrated_with_an_agent(url: str) -> str:
    """Migrate the database at ``url`` and create one agent; its id. Skips before Postgres 15, where
    ``pg_stat_force_next_flush`` (needed to count one statement's reads) does not exist."""
    store = PostgresTaskStore(url, max_size=1)
    try:
        store.migrate()
        agent = store.create_agent(
            NewAgent(provider="scripted", model="scripted-1", organization_id=ORG, name="a", kind="general"),
            now=utcnow(),
        )
    finally:
        store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.info.server_version < 150000:
            pytest.skip("counting one statement's reads needs pg_stat_force_next_flush (Postgres 15+)")
    return agent.id


@pytest.fixture(scope="module")
def stale_database() -> Iterator[str]:
    """A migrated database whose statistics say no task is queued or pending, holding a backlog of each."""
    with temporary_database() as url:
        agent_id = migrated_with_an_agent(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE ai_agent_tasks SET (autovacuum_enabled = false)")
            conn.execute(
                "INSERT INTO ai_agent_tasks (id, agent_id, organization_id, title, status, completed_at)"
                " SELECT gen_random_uuid(), %s, %s, 'task ' || n, 'completed', now()"
                " FROM generate_series(1, %s) n",
                (agent_id, ORG, 2 * BACKLOG),
            )
            conn.execute("ANALYZE ai_agent_tasks")  # the statistics: every task completed
            conn.execute(
                "UPDATE ai_agent_tasks SET status = 'queued', queued_at = now(), completed_at = NULL"
                " WHERE id IN (SELECT id FROM ai_agent_tasks ORDER BY id LIMIT %s)",
                (BACKLOG,),
            )
            conn.execute(
                "UPDATE ai_agent_tasks SET status = 'pending', completed_at = NULL WHERE status = 'completed'"
            )
        yield url


@pytest.fixture
def conn(stale_database: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(stale_database, autocommit=True) as connection:
        connection.execute("SET TIME ZONE 'UTC'")
        yield connection


def reads_of(conn: psycopg.Connection[tuple[object, ...]], table: str) -> int:
    """Index entries and heap rows of ``table`` read so far, this backend's latest counts included."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT (SELECT COALESCE(sum(idx_tup_read), 0) FROM pg_stat_user_indexes WHERE relname = %s)"
        " + (SELECT COALESCE(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = %s)",
        (table, table),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def two_with_status(conn: psycopg.Connection[tuple[object, ...]], status: str) -> list[str]:
    rows = conn.execute(
        "SELECT id::text FROM ai_agent_tasks WHERE status = %s ORDER BY id DESC LIMIT 2", (status,)
    ).fetchall()
    assert len(rows) == 2
    return [str(row[0]) for row in rows]


def test_a_claim_of_two_reads_two_tasks_not_the_queued_backlog(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    task_ids = two_with_status(conn, "queued")
    now = utcnow()
    before = reads_of(conn, "ai_agent_tasks")

    claimed = conn.execute(
        "SELECT (task).id FROM agentq_claim_many(%s::uuid[], %s::uuid[], %s::text[], %s::timestamptz[],"
        " %s::timestamptz[])",
        (task_ids, [new_id(), new_id()], ["w", "w"], [now + timedelta(seconds=30)] * 2, [now, now]),
    ).fetchall()

    read = reads_of(conn, "ai_agent_tasks") - before
    assert sorted(str(row[0]) for row in claimed) == sorted(task_ids)
    assert read <= FEW, f"claiming 2 of {BACKLOG} queued tasks read {read} tuples of ai_agent_tasks"


def test_enqueueing_reads_the_tasks_enqueued_not_the_pending_backlog(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    one, other = two_with_status(conn, "pending")
    now = utcnow()
    before = reads_of(conn, "ai_agent_tasks")

    alone = conn.execute("SELECT id FROM agentq_mark_queued(%s, NULL, %s, %s)", (one, now, now)).fetchall()
    read_alone = reads_of(conn, "ai_agent_tasks") - before
    many = conn.execute(
        "SELECT id FROM agentq_mark_queued_many(%s::uuid[], NULL, %s, %s)", ([other], now, now)
    ).fetchall()
    read_many = reads_of(conn, "ai_agent_tasks") - before - read_alone

    assert len(alone) == 1 and len(many) == 1
    assert read_alone <= FEW, f"enqueueing 1 of {BACKLOG} pending tasks read {read_alone} tuples"
    assert read_many <= FEW, f"enqueueing 1 of {BACKLOG} pending tasks in a batch read {read_many} tuples"


#: Rows each table gains after the session's first calls built its plans.
GROWTH = 3_000


def claim_and_complete(conn: psycopg.Connection[tuple[object, ...]], task_ids: list[str]) -> None:
    """Claim ``task_ids`` and complete them (each with its model call's step) through the batch functions."""
    now, count = utcnow(), len(task_ids)
    run_ids = [new_id() for _ in task_ids]
    claimed = conn.execute(
        "SELECT (task).id FROM agentq_claim_many(%s::uuid[], %s::uuid[], %s::text[], %s::timestamptz[],"
        " %s::timestamptz[])",
        (task_ids, run_ids, ["w"] * count, [now + timedelta(seconds=30)] * count, [now] * count),
    ).fetchall()
    assert len(claimed) == count
    steps = [
        Jsonb(
            {
                "firing": 0,
                "seq": 0,
                "kind": "llm",
                "name": "scripted-1",
                "status": "completed",
                "input": {},
                "output": {"text": "done"},
                "started_at": now.isoformat(),
                "finished_at": now.isoformat(),
            }
        )
        for _ in task_ids
    ]
    completed = conn.execute(
        "SELECT * FROM agentq_complete_many(%s::uuid[], %s::uuid[], %s::timestamptz[], %s::jsonb[],"
        " %s::jsonb[], %s::integer[], %s::integer[], %s::integer[],"
        " %s::integer[], %s::numeric[], %s::jsonb[])",
        (
            task_ids,
            run_ids,
            [now] * count,
            [Jsonb({"output": "done"})] * count,
            [Jsonb([])] * count,
            [1] * count,
            [1] * count,
            [0] * count,
            [0] * count,
            [None] * count,
            steps,
        ),
    ).fetchall()
    assert len(completed) == count


def test_a_sessions_kept_plans_find_rows_by_key_after_the_tables_grew() -> None:
    with temporary_database() as url:
        agent_id = migrated_with_an_agent(url)
        with psycopg.connect(url, autocommit=True) as session, psycopg.connect(url, autocommit=True) as other:
            session.execute("SET TIME ZONE 'UTC'")

            def queued(count: int) -> list[str]:
                rows = other.execute(
                    "INSERT INTO ai_agent_tasks (id, agent_id, organization_id, title, status, queued_at)"
                    " SELECT gen_random_uuid(), %s, %s, 'task ' || n, 'queued', now()"
                    " FROM generate_series(1, %s) n RETURNING id::text",
                    (agent_id, ORG, count),
                ).fetchall()
                return [str(row[0]) for row in rows]

            # The session's first calls, on nearly empty tables: its plans are built now and kept.
            claim_and_complete(session, queued(2))
            # Then every table the functions read grows by thousands of rows.
            grown = queued(GROWTH)
            other.execute(
                "INSERT INTO ai_agent_task_steps"
                " (task_id, run_id, firing, seq, kind, name, status, started_at)"
                " SELECT id, gen_random_uuid(), 0, 0, 'llm', 'm', 'completed', now()"
                " FROM unnest(%s::uuid[]) id",
                (grown,),
            )
            other.execute(
                "INSERT INTO ai_agents (id, organization_id, name, provider, model, kind)"
                " SELECT gen_random_uuid(), %s, 'agent ' || n, 'scripted', 'scripted-1', 'general'"
                " FROM generate_series(1, %s) n",
                (ORG, GROWTH),
            )
            tables = ("ai_agent_tasks", "ai_agent_task_steps", "ai_agents", "ai_agent_task_runs")
            before = {table: reads_of(session, table) for table in tables}

            claim_and_complete(session, queued(2))

            read = {table: reads_of(session, table) - before[table] for table in tables}
            assert all(count <= FEW for count in read.values()), (
                f"claiming and completing 2 tasks with plans built on empty tables read {read} tuples"
            )
