"""A task that fails all its attempts under `dramatiq actors` is one Sentry issue, tagged, with no secrets."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from taskstore import NewAgent, NewTask, TaskStatus, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import WorkerProcess, command_env, free_port
from tests.fakes.openai_server import FakeOpenAIServer, openai_error
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.fakes.sentry_receiver import SentryReceiver
from tests.harness import ORG, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]

API_KEY = "sk-live-0123456789abcdefSECRET"
REDIS_PASSWORD = "redis-pass-7f3a9c"
PROMPT = "CONFIDENTIAL-SYSTEM-PROMPT-4821"


@pytest.fixture
def redis_with_password() -> Iterator[str]:
    """A private redis-server that requires a password; its URL carries the password."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--requirepass", REDIS_PASSWORD],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.close()
    try:
        yield url
    finally:
        process.kill()
        process.wait(timeout=10)


def test_a_task_failing_every_attempt_is_one_scrubbed_sentry_event_tagged_with_its_task(
    postgres_store: PostgresTaskStore, postgres_url: str, redis_with_password: str, tmp_path: Path
) -> None:
    # Given an OpenAI agent whose model answers 500 to every attempt (3 attempts)
    with FakeOpenAIServer() as openai, SentryReceiver() as sentry, OTLPReceiver() as otlp:
        openai.enqueue(*(openai_error(500, "upstream overloaded") for _ in range(3)))
        env = command_env(
            DATABASE_URL=postgres_url,
            REDIS_URL=redis_with_password,
            OPENAI_API_KEY=API_KEY,
            OPENAI_BASE_URL=openai.base_url,
            AGENTQ_BACKOFF_MS="50",
            SENTRY_DSN=sentry.dsn,
            SENTRY_TRACES_SAMPLE_RATE="1.0",
            OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        now = utcnow()
        agent = postgres_store.create_agent(
            NewAgent(
                organization_id=ORG,
                name="analyst",
                provider="openai",
                model="gpt-4o-mini",
                system_prompt=PROMPT,
            ),
            now=now,
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
            wait_until(
                lambda: postgres_store.get_task(task.id).status == TaskStatus.FAILED,  # type: ignore[union-attr]
                timeout_s=60,
                what="the task to fail all its attempts",
            )
            sentry.wait_for(lambda receiver: len(receiver.items("transaction")) >= 3)
            assert worker.terminate() == 0
        finally:
            worker.close()
        raw = b"".join(sentry.raw)
        events = sentry.events()
        spans = otlp.spans()

    # Then exactly one error event, for the last attempt, tagged with the task, agent, org, kind, attempt
    assert len(events) == 1, [event.get("tags") for event in events]
    [event] = events
    tags = dict(event["tags"])
    assert tags["task_id"] == task.id and tags["organization_id"] == ORG and tags["agent_id"] == agent.id
    assert tags["kind"] == "general" and tags["attempt"] == "3" and tags["outcome"] == "failed"
    assert event["level"] == "error"
    assert [a["attempt"] for a in event["contexts"]["agentq"]["attempts"]] == [1, 2, 3]
    # And it carries the OpenTelemetry trace id of the task's trace
    process_traces = {s.trace_id for s in spans if s.name == "general process"}
    assert event["contexts"]["trace"]["trace_id"] == tags["otel.trace_id"]
    assert tags["otel.trace_id"] in process_traces and len(process_traces) == 1
    # And every attempt is a failed queue.process transaction: retried, retried, failed
    transactions = sorted(sentry.items("transaction"), key=lambda t: int(dict(t["tags"])["attempt"]))
    assert [dict(t["tags"])["outcome"] for t in transactions] == ["retried", "retried", "failed"]
    assert {t["contexts"]["trace"]["status"] for t in transactions} == {"internal_error"}
    # And no API key, Redis password or prompt left the process
    for secret in (API_KEY, REDIS_PASSWORD, PROMPT):
        assert secret.encode() not in raw
