"""The Supabase store beyond the conformance suite: row-level security on the real PostgreSQL,
writes whose response is lost, the migration applied twice, and a real worker fed through supabase-py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from taskstore import NewAgent, NewTask, TaskStatus, Usage, new_id, utcnow
from taskstore.schema import MIGRATIONS, render_all
from taskstore.sql_store import signatures
from taskstore.supabase import SupabaseTaskStore
from tests.acceptance.processes import ThrowawayRedis, WorkerProcess, command_env
from tests.conftest import FAKE_SERVICE_KEY, TRUNCATE, Clock
from tests.fakes.postgrest import FakePostgrest, iter_rpc_functions
from tests.harness import wait_until
from tests.services import temporary_database

pytestmark = pytest.mark.integration

ORG_A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
ORG_B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
ALICE = "a11ce000-0000-4000-8000-000000000001"  # member of org A only


# --- row-level security ---------------------------------------------------------------------------------


@pytest.fixture
def rls_db(postgres_url: str) -> Iterator[dict[str, str]]:
    """Org A and org B, each with an agent, a task and a run; Alice belongs to org A."""
    ids = {name: new_id() for name in ("agent_a", "agent_b", "task_a", "task_b", "run_a", "run_b")}
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(TRUNCATE + ", ai_organization_members")
        conn.execute(
            "INSERT INTO ai_organization_members (organization_id, user_id, role) VALUES (%s, %s, 'member')",
            (ORG_A, ALICE),
        )
        for org, suffix in ((ORG_A, "a"), (ORG_B, "b")):
            conn.execute(
                "INSERT INTO ai_agents (id, organization_id, name) VALUES (%s, %s, 'agent')",
                (ids[f"agent_{suffix}"], org),
            )
            conn.execute(
                "INSERT INTO ai_agent_tasks (id, agent_id, organization_id, title) VALUES (%s, %s, %s, 't')",
                (ids[f"task_{suffix}"], ids[f"agent_{suffix}"], org),
            )
            conn.execute(
                "INSERT INTO ai_agent_task_runs (id, task_id, attempt, status)"
                " VALUES (%s, %s, 1, 'completed')",
                (ids[f"run_{suffix}"], ids[f"task_{suffix}"]),
            )
    yield ids


def as_role(conn: psycopg.Connection[tuple[object, ...]], role: str, sub: str | None = None) -> None:
    """What PostgREST does per request: the JWT's role, and its claims for ``auth.uid()``."""
    conn.execute(f"SET LOCAL ROLE {role}")
    claims = {"role": role, **({"sub": sub} if sub else {})}
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))


def test_a_member_reads_only_their_organizations_tasks_runs_and_agents(
    postgres_url: str, rls_db: dict[str, str]
) -> None:
    with psycopg.connect(postgres_url) as conn, conn.transaction():
        as_role(conn, "authenticated", ALICE)
        tasks = [str(row[0]) for row in conn.execute("SELECT id FROM ai_agent_tasks")]
        runs = [str(row[0]) for row in conn.execute("SELECT id FROM ai_agent_task_runs")]
        agents = [str(row[0]) for row in conn.execute("SELECT id FROM ai_agents")]
        org_b = conn.execute("SELECT count(*) FROM ai_agent_tasks WHERE organization_id = %s", (ORG_B,))
        assert org_b.fetchone() == (0,)

    assert tasks == [rls_db["task_a"]]
    assert runs == [rls_db["run_a"]]
    assert agents == [rls_db["agent_a"]]


def test_a_member_cannot_insert_or_update_another_organizations_tasks(
    postgres_url: str, rls_db: dict[str, str]
) -> None:
    with psycopg.connect(postgres_url) as conn:
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
            conn.transaction(),
        ):
            as_role(conn, "authenticated", ALICE)
            conn.execute(
                "INSERT INTO ai_agent_tasks (agent_id, organization_id, title) VALUES (%s, %s, 'x')",
                (rls_db["agent_b"], ORG_B),
            )
        with (  # their own org, but another org's agent
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
            conn.transaction(),
        ):
            as_role(conn, "authenticated", ALICE)
            conn.execute(
                "INSERT INTO ai_agent_tasks (agent_id, organization_id, title) VALUES (%s, %s, 'x')",
                (rls_db["agent_b"], ORG_A),
            )
        with conn.transaction():
            as_role(conn, "authenticated", ALICE)
            updated = conn.execute(
                "UPDATE ai_agent_tasks SET title = 'hijacked' WHERE id = %s", (rls_db["task_b"],)
            ).rowcount
            created = conn.execute(
                "INSERT INTO ai_agent_tasks (agent_id, organization_id, title) VALUES (%s, %s, 'mine')"
                " RETURNING status",
                (rls_db["agent_a"], ORG_A),
            ).fetchone()
        assert updated == 0
        assert created == ("pending",)


def test_strangers_and_anon_see_nothing_and_the_service_role_sees_everything(
    postgres_url: str, rls_db: dict[str, str]
) -> None:
    with psycopg.connect(postgres_url) as conn:
        with conn.transaction():
            as_role(conn, "authenticated", str(uuid.uuid4()))
            assert conn.execute("SELECT count(*) FROM ai_agent_tasks").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            as_role(conn, "anon")
            conn.execute("SELECT count(*) FROM ai_agent_tasks")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            as_role(conn, "authenticated", ALICE)  # members cannot call the workers' functions
            conn.execute("SELECT agentq_queue_counts(now())")
        with conn.transaction():
            as_role(conn, "service_role")
            assert conn.execute("SELECT count(*) FROM ai_agent_tasks").fetchone() == (2,)
            assert conn.execute("SELECT count(*) FROM ai_agent_task_runs").fetchone() == (2,)


def test_the_migration_applies_twice_on_a_plain_postgres_and_ships_every_rpc_function() -> None:
    script = render_all("postgres")
    with temporary_database() as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(script.encode())
        conn.execute(script.encode())
        assert set(signatures()) <= set(iter_rpc_functions(conn))
        names = [row[0] for row in conn.execute("SELECT name FROM agentq_schema_migrations ORDER BY 1")]
        assert names == [migration.name for migration in MIGRATIONS]


def test_updated_at_is_maintained_when_an_update_leaves_it_alone(
    postgres_url: str, rls_db: dict[str, str]
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE ai_agent_tasks SET updated_at = '2000-01-01Z' WHERE id = %s", (rls_db["task_a"],)
        )
        conn.execute("UPDATE ai_agent_tasks SET title = 'renamed' WHERE id = %s", (rls_db["task_a"],))
        row = conn.execute(
            "SELECT updated_at > now() - interval '1 minute' FROM ai_agent_tasks WHERE id = %s",
            (rls_db["task_a"],),
        ).fetchone()
    assert row == (True,)


# --- lost responses -------------------------------------------------------------------------------------


def test_writes_whose_response_was_lost_are_applied_exactly_once(
    supabase_store: SupabaseTaskStore, fake_postgrest: FakePostgrest, clock: Clock
) -> None:
    agent = supabase_store.create_agent(
        NewAgent(provider="scripted", model="scripted-1", organization_id=ORG_A, name="a"), now=clock()
    )

    fake_postgrest.drop_responses("POST", "/rpc/agentq_create_tasks")
    task = supabase_store.create_task(
        NewTask(agent_id=agent.id, organization_id=ORG_A, title="t"), now=clock()
    )
    fake_postgrest.drop_responses("POST", "/rpc/agentq_mark_queued_many")
    queued = supabase_store.mark_queued(task.id, priority=None, run_at=clock(), now=clock())
    fake_postgrest.drop_responses("POST", "/rpc/agentq_claim")
    claim = supabase_store.claim(task.id, run_id=new_id(), worker_id="w", lease_until=clock(), now=clock())
    fake_postgrest.drop_responses("POST", "/rpc/agentq_finish")
    assert claim is not None
    done = supabase_store.complete(
        task.id, claim.run_id, result={"output": "x"}, usage=Usage(), transcript=None, now=clock()
    )

    assert queued is not None and queued.status == TaskStatus.QUEUED
    assert claim.task.attempts == 1 and claim.agent is not None and claim.agent.id == agent.id
    assert done is True
    final = supabase_store.get_task(task.id)
    assert final is not None and final.status == TaskStatus.COMPLETED and final.attempts == 1
    assert len(supabase_store.get_runs(task.id)) == 1
    # Without a lost response, the compare-and-set still refuses a second finish.
    assert not supabase_store.complete(
        task.id, claim.run_id, result={}, usage=Usage(), transcript=None, now=clock()
    )


def test_a_lost_claim_response_does_not_hand_another_workers_claim_over(
    supabase_store: SupabaseTaskStore, fake_postgrest: FakePostgrest, clock: Clock
) -> None:
    agent = supabase_store.create_agent(
        NewAgent(provider="scripted", model="scripted-1", organization_id=ORG_A, name="a"), now=clock()
    )
    task = supabase_store.create_task(
        NewTask(agent_id=agent.id, organization_id=ORG_A, title="t"), now=clock()
    )
    supabase_store.mark_queued(task.id, priority=None, run_at=clock(), now=clock())
    winner = supabase_store.claim(task.id, run_id=new_id(), worker_id="w1", lease_until=clock(), now=clock())
    assert winner is not None

    fake_postgrest.drop_responses("POST", "/rpc/agentq_claim")
    assert (
        supabase_store.claim(task.id, run_id=new_id(), worker_id="w2", lease_until=clock(), now=clock())
        is None
    )


def test_a_missing_schema_is_reported_with_the_file_to_apply(postgres_url: str) -> None:
    with temporary_database() as empty, FakePostgrest(empty, service_key="k") as server:
        store = SupabaseTaskStore(server.url, "k")
        try:
            with pytest.raises(Exception, match="supabase/migrations"):
                store.migrate()
        finally:
            store.close()


# --- acceptance: supabase-py insert + add_task under `dramatiq actors` --------------------------------


@pytest.mark.acceptance
# supabase-py 2.34's own default client passes postgrest-py deprecated timeout/verify arguments.
@pytest.mark.filterwarnings("ignore:The '.*' parameter is deprecated:DeprecationWarning")
def test_a_task_inserted_through_supabase_py_and_added_completes_under_dramatiq_actors(
    supabase_store: SupabaseTaskStore, fake_postgrest: FakePostgrest, tmp_path: Path
) -> None:
    from supabase import ClientOptions, create_client

    agent = supabase_store.create_agent(
        NewAgent(provider="scripted", model="scripted-1", organization_id=ORG_A, name="reporter"),
        now=utcnow(),
    )
    redis_server = ThrowawayRedis()  # private: the shared test Redis database is flushed by other runs
    env = command_env(
        SUPABASE_URL=fake_postgrest.url,
        SUPABASE_SERVICE_ROLE_KEY=FAKE_SERVICE_KEY,
        REDIS_URL=redis_server.url,
    )
    for name in ("SUPABASE_SECRET_KEY", "DATABASE_URL", "AGENTQ_SQLITE_PATH"):
        env.pop(name, None)
    env["AGENTQ_SQLITE_PATH"] = str(tmp_path / "must-not-be-used.db")
    worker = WorkerProcess(env, tmp_path / "worker.log", threads=2)
    try:
        worker.wait_ready()
        # The application's side, exactly as the seed does it: insert the row, then add_task.
        client = create_client(
            fake_postgrest.url,
            FAKE_SERVICE_KEY,
            ClientOptions(auto_refresh_token=False, persist_session=False),
        )
        inserted = (
            client.table("ai_agent_tasks")
            .insert(
                {
                    "agent_id": agent.id,
                    "organization_id": ORG_A,
                    "title": "Weekly revenue report",
                    "description": "Summarise revenue",
                    "context": {"week": 47},
                    "priority": 7,
                }
            )
            .execute()
        )
        row = inserted.data[0]
        assert isinstance(row, dict)
        task_id = str(row["id"])
        producer = WorkerProcess.run_python(
            env, f"from actors import agent_task_queue\nagent_task_queue.add_task({task_id!r})\n"
        )
        assert producer.returncode == 0, producer.stderr

        def completed() -> bool:
            task = supabase_store.get_task(task_id)
            return task is not None and task.status == TaskStatus.COMPLETED

        wait_until(completed, timeout_s=60, interval_s=0.1, what="the supabase-py task to complete")
        task = supabase_store.get_task(task_id)
        assert task is not None and task.result is not None and task.priority == 7
        [run] = supabase_store.get_runs(task_id)
        assert run.status == "completed" and run.worker_id
        assert worker.terminate() == 0
        assert f"[AgentTaskQueue] ✓ Job {task_id} completed" in worker.log()
        assert FAKE_SERVICE_KEY not in worker.log()
        assert not (tmp_path / "must-not-be-used.db").exists()
        assert any(path.startswith("/rest/v1/rpc/agentq_claim") for _, path in fake_postgrest.requests)
    finally:
        worker.close()
        redis_server.close()
