"""Secrets stay in: after a failing run under `dramatiq actors` whose error text names every secret, no
sink holds one — database columns, Redis, the worker's log, Sentry envelopes, OTLP spans."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis

from taskstore import NewAgent, NewTask, TaskStatus, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import WorkerProcess, command_env
from tests.acceptance.test_sentry import REDIS_PASSWORD, redis_with_password
from tests.fakes.openai_server import FakeOpenAIServer, openai_error
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.fakes.sentry_receiver import SentryReceiver
from tests.harness import ORG, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]
__all__ = ["redis_with_password"]  # the fixture, imported for this module's tests

OPENAI_KEY = "sk-proj-SecretsTestOpenAIKey0123456789"
ANTHROPIC_KEY = "sk-ant-api03-SecretsTestAnthropicKey0123"
SUPABASE_KEY = "sb_secret_SecretsTestSupabaseKey0123"
DB_PASSWORD = "Pg-Pass-SecretsTest-4711"


@pytest.fixture
def database_url_with_password(postgres_url: str) -> Iterator[str]:
    """``postgres_url`` as a login role with a password (trust auth accepts it; the URL carries it)."""
    role = f"agentq_secret_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'")
    parts = urlsplit(postgres_url)
    netloc = f"{role}:{DB_PASSWORD}@{parts.hostname}:{parts.port or 5432}"
    try:
        yield urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def _database_text(postgres_url: str) -> str:
    """Every row of the task and run tables, as text (errors, results, stacktraces, transcripts)."""
    with psycopg.connect(postgres_url) as conn:
        tasks = conn.execute("SELECT t::text FROM ai_agent_tasks t").fetchall()
        runs = conn.execute("SELECT r::text FROM ai_agent_task_runs r").fetchall()
    return "\n".join(str(row[0]) for row in tasks + runs)


def _redis_text(url: str) -> str:
    """Every key of the Redis database with its value, read by type."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    readers: dict[str, Callable[[Any], Any]] = {
        "string": client.get,
        "hash": client.hgetall,
        "list": lambda key: client.lrange(key, 0, -1),
        "set": client.smembers,
        "zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        "stream": client.xrange,
    }
    dump = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            name = kind.decode() if isinstance(kind, bytes) else str(kind)
            dump.append(f"{key!r} {name} {readers[name](key)!r}")
    finally:
        client.close()
    return "\n".join(dump)


def test_a_failing_run_leaves_no_secret_in_any_sink(
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    database_url_with_password: str,
    redis_with_password: str,
    tmp_path: Path,
) -> None:
    # Given a worker configured with made-up secrets, and a provider whose 401 echoes all of them
    leak = (
        f"Incorrect API key provided: {OPENAI_KEY}; also saw {ANTHROPIC_KEY}, {SUPABASE_KEY},"
        f" {database_url_with_password} and {redis_with_password}"
    )
    with FakeOpenAIServer() as openai, SentryReceiver() as sentry, OTLPReceiver() as otlp:
        openai.enqueue(*(openai_error(401, leak, type="invalid_request_error") for _ in range(3)))
        env = command_env(
            DATABASE_URL=database_url_with_password,
            REDIS_URL=redis_with_password,
            OPENAI_API_KEY=OPENAI_KEY,
            OPENAI_BASE_URL=openai.base_url,
            ANTHROPIC_API_KEY=ANTHROPIC_KEY,
            SUPABASE_SECRET_KEY=SUPABASE_KEY,
            AGENTQ_BACKOFF_MS="50",
            SENTRY_DSN=sentry.dsn,
            SENTRY_TRACES_SAMPLE_RATE="1.0",
            OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        now = utcnow()
        agent = postgres_store.create_agent(
            NewAgent(organization_id=ORG, name="analyst", provider="openai", model="gpt-4o-mini"), now=now
        )
        task = postgres_store.create_task(
            NewTask(agent_id=agent.id, organization_id=ORG, title="Summarise"), now=now
        )
        worker = WorkerProcess(env, tmp_path / "worker.log")
        try:
            producer = WorkerProcess.run_python(
                env, f"from actors import agent_task_queue; agent_task_queue.add_task({task.id!r})"
            )
            assert producer.returncode == 0, producer.stderr
            # When its run fails
            wait_until(
                lambda: postgres_store.get_task(task.id).status == TaskStatus.FAILED,  # type: ignore[union-attr]
                timeout_s=60,
                what="the task to fail",
            )
            sentry.wait_for(lambda receiver: len(receiver.events()) >= 1)
            assert worker.terminate() == 0
        finally:
            worker.close()
        sinks = {
            "database": _database_text(postgres_url),
            "redis": _redis_text(redis_with_password),
            "worker log": worker.log(),
            "sentry": b"".join(sentry.raw).decode("utf-8", errors="replace"),
            "otlp": "\n".join(str(request) for request in otlp.requests),
        }

    # Then the failure reached every sink (so each was really exercised)...
    assert openai.requests, "the provider was never called"
    assert "Incorrect API key provided" in sinks["database"]
    assert "Traceback" in sinks["database"]  # the run's stacktrace column
    assert "Incorrect API key provided" in sinks["worker log"]
    assert "Incorrect API key provided" in sinks["sentry"]
    assert "exception.stacktrace" in sinks["otlp"] and "Incorrect API key provided" in sinks["otlp"]
    assert sinks["redis"], "the broker's keys were not found"
    # ...and none of them holds a secret
    secrets = (OPENAI_KEY, ANTHROPIC_KEY, SUPABASE_KEY, DB_PASSWORD, REDIS_PASSWORD)
    leaks = [(sink, secret) for sink, text in sinks.items() for secret in secrets if secret in text]
    assert leaks == []
