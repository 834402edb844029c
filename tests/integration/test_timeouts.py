"""One hung connection must not freeze a process: Postgres and Redis calls give up after a bound."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
import redis

from actors.broker.factory import redis_client
from actors.errors import BrokerUnavailable
from config.settings import load_settings
from taskstore import Claim, InMemoryTaskStore, NewAgent, NewTask, TaskStatus, utcnow
from taskstore.errors import StoreUnavailable
from taskstore.postgres import PostgresTaskStore
from tests.harness import ORG, redis_harness, wait_until
from tests.services import temporary_database

pytestmark = pytest.mark.integration

#: The Redis socket timeout these tests configure, in seconds.
SOCKET_TIMEOUT_S = 2.0


@pytest.fixture
def small_timeout_store(postgres_store: PostgresTaskStore, postgres_url: str) -> Iterator[PostgresTaskStore]:
    """The store on the session's (emptied) database with a 200 ms statement timeout."""
    store = PostgresTaskStore(postgres_url, max_size=4, statement_timeout_ms=200)
    yield store
    store.close()


def test_a_statement_longer_than_the_timeout_is_cancelled_as_store_unavailable(
    small_timeout_store: PostgresTaskStore,
) -> None:
    started = time.monotonic()

    with pytest.raises(StoreUnavailable, match="statement_timeout 200 ms"):
        small_timeout_store._fetch("SELECT pg_sleep(30)")

    assert time.monotonic() - started < 10
    assert small_timeout_store._fetch("SELECT 1 AS one") == [{"one": 1}]  # the pool is still usable


def test_a_claim_stuck_behind_a_lock_another_session_holds_is_cancelled(
    small_timeout_store: PostgresTaskStore, postgres_url: str
) -> None:
    """A worker's claim waiting on a row that a hung session locked gives up and can be retried."""
    now = utcnow()
    agent = small_timeout_store.create_agent(
        NewAgent(provider="scripted", model="scripted-1", organization_id=ORG, name="a"), now=now
    )
    task = small_timeout_store.create_task(
        NewTask(agent_id=agent.id, organization_id=ORG, title="t"), now=now
    )
    small_timeout_store.mark_queued(task.id, priority=None, run_at=now, now=now)
    lease_until = now + timedelta(minutes=1)

    def claim() -> Claim | None:
        return small_timeout_store.claim(
            task.id, run_id=str(uuid.uuid4()), worker_id="w", lease_until=lease_until, now=now
        )

    with psycopg.connect(postgres_url) as hung, hung.transaction():
        hung.execute("SELECT id FROM ai_agent_tasks WHERE id = %s FOR UPDATE", (task.id,))
        with pytest.raises(StoreUnavailable, match="statement"):
            claim()

    claimed = claim()
    assert claimed is not None and claimed.task.status == TaskStatus.RUNNING


def test_pooled_connections_carry_the_timeouts_and_keepalives(small_timeout_store: PostgresTaskStore) -> None:
    with small_timeout_store._connection() as conn:
        parameters = conn.info.get_parameters()
        timeout = conn.execute("SHOW statement_timeout").fetchone()

    assert timeout == {"statement_timeout": "200ms"}
    assert parameters["keepalives"] == "1" and parameters["keepalives_idle"] == "30"
    assert parameters["keepalives_interval"] == "10" and parameters["keepalives_count"] == "3"
    assert parameters["connect_timeout"] == "10"


def test_the_database_urls_own_parameters_win(postgres_store: PostgresTaskStore, postgres_url: str) -> None:
    query = "connect_timeout=3&keepalives_idle=7&sslmode=disable&options=-c%20statement_timeout%3D1234"
    url = f"{postgres_url}?{query}"
    store = PostgresTaskStore(url, max_size=2, statement_timeout_ms=200)
    try:
        with store._connection() as conn:
            parameters = conn.info.get_parameters()
            timeout = conn.execute("SHOW statement_timeout").fetchone()
    finally:
        store.close()

    assert timeout == {"statement_timeout": "1234ms"}
    assert parameters["connect_timeout"] == "3" and parameters["keepalives_idle"] == "7"
    assert parameters["sslmode"] == "disable" and parameters["keepalives_count"] == "3"


def test_sslmode_require_reaches_libpq(
    postgres_store: PostgresTaskStore, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(postgres_url) as conn:
        ssl = conn.execute("SHOW ssl").fetchone()
    if ssl != ("off",):
        pytest.skip("the test server has SSL on: sslmode=require would simply succeed")
    store = PostgresTaskStore(f"{postgres_url}?sslmode=require", max_size=1, timeout_s=2)
    try:
        with pytest.raises(StoreUnavailable, match="no Postgres connection"):
            store.get_task("00000000-0000-4000-8000-000000000000")
    finally:
        store.close()
    assert "SSL was required" in caplog.text


def test_a_zero_statement_timeout_sets_none(postgres_store: PostgresTaskStore, postgres_url: str) -> None:
    store = PostgresTaskStore(postgres_url, max_size=1, statement_timeout_ms=0)
    try:
        with store._connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == {"statement_timeout": "0"}
    finally:
        store.close()


def test_migrating_waits_for_another_migrator_past_the_statement_timeout() -> None:
    from taskstore.postgres import _MIGRATION_LOCK

    with temporary_database() as url:
        store = PostgresTaskStore(url, max_size=2, statement_timeout_ms=200)
        outcome: list[object] = []
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            migrating = threading.Thread(target=lambda: outcome.append(_migrate(store)))
            migrating.start()
            wait_until(
                lambda: _waited_on_advisory_lock_s(other) > 0.6, timeout_s=20, what="migrate to wait 0.6 s"
            )
            other.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
            migrating.join(30)
        store.close()

    assert not migrating.is_alive()
    [applied] = outcome
    assert isinstance(applied, list) and applied, applied


def _migrate(store: PostgresTaskStore) -> object:
    try:
        return store.migrate()
    except Exception as exc:  # reported by the assertion
        return exc


def _waited_on_advisory_lock_s(conn: psycopg.Connection[tuple[object, ...]]) -> float:
    row = conn.execute(
        "SELECT coalesce(max(extract(epoch FROM now() - query_start)), 0) FROM pg_stat_activity"
        " WHERE wait_event = 'advisory' AND datname = current_database()"
    ).fetchone()
    return float(row[0]) if row else 0.0  # type: ignore[arg-type]


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A TCP server that accepts connections and reads every command but never replies."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(conn)
            threading.Thread(target=_swallow, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    server.close()


def _swallow(conn: socket.socket) -> None:
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def test_a_redis_server_that_never_replies_fails_a_command_within_the_socket_timeout(
    silent_redis: str,
) -> None:
    client = redis_client(load_settings(redis_url=silent_redis, redis_socket_timeout_s=SOCKET_TIMEOUT_S))
    started = time.monotonic()

    with pytest.raises(redis.TimeoutError):
        client.ping()

    assert time.monotonic() - started < SOCKET_TIMEOUT_S + 3
    client.close()


def test_add_task_on_a_redis_that_never_replies_raises_and_leaves_the_task_pending(silent_redis: str) -> None:
    with redis_harness(InMemoryTaskStore(), silent_redis, redis_socket_timeout_s=SOCKET_TIMEOUT_S) as app:
        task_id = app.task()
        started = time.monotonic()

        with pytest.raises(BrokerUnavailable, match="stays pending"):
            app.queue.add_task(task_id)

        assert time.monotonic() - started < SOCKET_TIMEOUT_S + 5
        assert app.store.get_task(task_id).status == TaskStatus.PENDING  # type: ignore[union-attr]
