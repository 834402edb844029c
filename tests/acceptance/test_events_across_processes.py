"""Following a task's live events from another process while a real `dramatiq actors` runs it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from taskstore import NewAgent, NewTask, TaskStatus, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import ROOT, WorkerProcess, command_env, free_port
from tests.fakes.anthropic_server import FakeAnthropicServer, anthropic_text, anthropic_tool_uses
from tests.fakes.http_server import FakeServer
from tests.fakes.openai_server import FakeOpenAIServer, openai_text, openai_tool_calls
from tests.harness import ORG, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]

ANSWER = "The answer is 43, computed in two steps."
#: Prints each event of the task named by argv[1] as a JSON line, as it arrives.
FOLLOWER = (
    "import json, sys\n"
    "from actors import agent_task_queue\n"
    "for event in agent_task_queue.events(sys.argv[1], timeout_s=90):\n"
    "    print(json.dumps(event.to_dict()), flush=True)\n"
)


@pytest.fixture(params=["openai", "anthropic"])
def fake(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, FakeServer]]:
    """A tool-using conversation on each provider's fake: two calculate turns, then the answer."""
    if request.param == "openai":
        with FakeOpenAIServer() as openai:
            openai.enqueue(
                openai_tool_calls(("calculate", {"expression": "2 * 21"})),
                openai_tool_calls(("calculate", {"expression": "42 + 1"})),
                openai_text(ANSWER),
            )
            yield "openai", "gpt-4o-mini", openai
    else:
        with FakeAnthropicServer() as anthropic:
            anthropic.enqueue(
                anthropic_tool_uses(("calculate", {"expression": "2 * 21"})),
                anthropic_tool_uses(("calculate", {"expression": "42 + 1"})),
                anthropic_text(ANSWER),
            )
            yield "anthropic", "claude-haiku-4-5", anthropic


def provider_env(provider: str, server: FakeServer, postgres_url: str, redis_url: str) -> dict[str, str]:
    prefix = provider.upper()
    return command_env(
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        **{f"{prefix}_API_KEY": "sk-test-key-0123456789", f"{prefix}_BASE_URL": server.base_url},  # type: ignore[attr-defined]
    )


def follow_in_another_process(env: dict[str, str], task_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, task_id],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_followed(
    env: dict[str, str],
    store: PostgresTaskStore,
    task_id: str,
    start_worker: Callable[[dict[str, str]], WorkerProcess],
) -> list[dict[str, Any]]:
    """Follow ``task_id`` from a subprocess (started first), queue it from a producer process, run a
    worker; returns the events the follower printed."""
    follower = follow_in_another_process(env, task_id)
    start_worker(env)
    producer = WorkerProcess.run_python(
        env, f"from actors import agent_task_queue; agent_task_queue.add_task({task_id!r})"
    )
    assert producer.returncode == 0, producer.stderr
    wait_until(
        lambda: store.get_task(task_id).status == TaskStatus.COMPLETED,  # type: ignore[union-attr]
        timeout_s=60,
        what="the task to complete",
    )
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_a_follower_in_another_process_sees_every_step_of_a_tool_using_run_in_order(
    fake: tuple[str, str, FakeServer],
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    workers: Callable[..., WorkerProcess],
) -> None:
    provider, model, server = fake
    env = provider_env(provider, server, postgres_url, redis_url)
    now = utcnow()
    agent = postgres_store.create_agent(
        NewAgent(
            organization_id=ORG, name="analyst", provider=provider, model=model, allowed_tools=("calculate",)
        ),
        now=now,
    )
    task = postgres_store.create_task(
        NewTask(agent_id=agent.id, organization_id=ORG, title="Compute"), now=now
    )

    events = run_followed(env, postgres_store, task.id, workers)

    step = ["llm_started", "llm_completed", "tool_started", "tool_completed"]
    assert [event["type"] for event in events] == [
        "queued",
        "running",
        *step,
        *step,
        "llm_started",
        "llm_completed",
        "completed",
    ]
    assert all(
        event["task_id"] == task.id and set(event) == {"id", "type", "task_id", "at", "data"}
        for event in events
    )
    completions = [event["data"] for event in events if event["type"] == "llm_completed"]
    assert [(data["input_tokens"], data["output_tokens"]) for data in completions] == [(10, 5)] * 3
    assert all(data["provider"] == provider and float(data["cost_usd"]) > 0 for data in completions)
    assert [event["data"]["name"] for event in events if event["type"] == "tool_completed"] == [
        "calculate"
    ] * 2
    assert not any(event["type"] == "llm_delta" for event in events)  # the agent does not stream


def test_a_streaming_agents_text_arrives_as_llm_delta_events_through_both_sdks(
    fake: tuple[str, str, FakeServer],
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    workers: Callable[..., WorkerProcess],
) -> None:
    # Given an agent with `stream` on, a provider streaming its answer a few characters at a time, every
    # chunk published as it comes (AGENTQ_EVENTS_DELTA_FLUSH_MS=0) with its text (AGENTQ_TRACE_CONTENT)
    provider, model, server = fake
    env = {
        **provider_env(provider, server, postgres_url, redis_url),
        "AGENTQ_EVENTS_DELTA_FLUSH_MS": "0",
        "AGENTQ_TRACE_CONTENT": "true",
    }
    now = utcnow()
    agent = postgres_store.create_agent(
        NewAgent(
            organization_id=ORG,
            name="streamer",
            provider=provider,
            model=model,
            allowed_tools=("calculate",),
            stream=True,
        ),
        now=now,
    )
    task = postgres_store.create_task(
        NewTask(agent_id=agent.id, organization_id=ORG, title="Compute"), now=now
    )

    # When it runs, followed from another process
    events = run_followed(env, postgres_store, task.id, workers)

    # Then the answer's text came as llm_delta events inside its model call, piece by piece
    kinds = [event["type"] for event in events]
    last_call = len(kinds) - 1 - kinds[::-1].index("llm_started")
    deltas = [event["data"] for event in events if event["type"] == "llm_delta"]
    assert kinds[last_call + 1 : last_call + 1 + len(deltas)] == ["llm_delta"] * len(deltas)
    assert kinds[last_call + 1 + len(deltas) :] == ["llm_completed", "completed"]
    assert len(deltas) > 5 and "".join(data["text"] for data in deltas) == ANSWER
    assert all(data["chars"] == len(data["text"]) for data in deltas)
    # every request streamed, and the streamed answers were recorded as a plain call records them
    assert all(request.body["stream"] is True for request in server.requests)
    assert [event["data"]["stream"] for event in events if event["type"] == "llm_started"] == [True] * 3
    done = postgres_store.get_task(task.id)
    assert done is not None and done.result is not None and done.result["output"] == ANSWER
    assert (done.input_tokens, done.output_tokens) == (30, 15)


def test_agentq_events_prints_a_finished_jobs_events_and_refuses_bad_input(
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    env = command_env(DATABASE_URL=postgres_url, REDIS_URL=redis_url)
    now = utcnow()
    agent = postgres_store.create_agent(
        NewAgent(organization_id=ORG, name="helper", provider="scripted", model="scripted-1"), now=now
    )
    task = postgres_store.create_task(
        NewTask(agent_id=agent.id, organization_id=ORG, title="Say hi"), now=now
    )
    workers(env)
    producer = WorkerProcess.run_python(
        env, f"from actors import agent_task_queue; agent_task_queue.add_task({task.id!r})"
    )
    assert producer.returncode == 0, producer.stderr

    def agentq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "actors.cli", "events", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    # --follow prints until the job ends
    followed = agentq(task.id, "--follow", "--timeout", "60")
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    assert [line.split()[2] for line in lines] == [
        "queued",
        "running",
        "llm_started",
        "llm_completed",
        "completed",
    ]
    assert lines[0].endswith("priority 5, by add_task") and "scripted/scripted-1" in lines[2]

    # --json: one object per line; --after: only later events
    as_json = agentq(task.id, "--json", "--after", lines[1].split()[1])
    assert [json.loads(line)["type"] for line in as_json.stdout.splitlines()] == [
        "llm_started",
        "llm_completed",
        "completed",
    ]

    # Bad input: exit 1 and one line naming the value
    missing = "00000000-0000-4000-8000-0000000000cc"
    for args, message in (
        ((missing,), f"task '{missing}' does not exist"),
        (("nope",), "task id 'nope' is not a UUID"),
        ((task.id, "--after", "yesterday"), "event id 'yesterday' is not '<milliseconds>-<sequence>'"),
        ((task.id, "--follow", "--timeout", "-1"), "timeout_s -1.0 must be a positive number"),
    ):
        refused = agentq(*args)
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.startswith("agentq: ") and message in refused.stderr, refused.stderr


@pytest.fixture
def redis_refusing_events(tmp_path: Path) -> Iterator[str]:
    """A private redis-server whose only user may run every command but ``XADD``: the broker works, every
    live event is refused (``NOPERM``)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    config = tmp_path / "redis.conf"
    config.write_text(
        f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\nuser default on nopass ~* &* +@all -xadd\n'
    )
    process = subprocess.Popen([server, str(config)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        wait_until(lambda: _answers(client), timeout_s=10, what="the private redis-server")
        yield url
    finally:
        client.close()
        process.kill()
        process.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_a_redis_that_refuses_every_event_neither_fails_nor_holds_up_a_run(
    redis_refusing_events: str,
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    workers: Callable[..., WorkerProcess],
) -> None:
    # Given a worker and a producer whose Redis refuses XADD (the broker's own commands work)
    env = command_env(DATABASE_URL=postgres_url, REDIS_URL=redis_refusing_events)
    now = utcnow()
    agent = postgres_store.create_agent(
        NewAgent(
            organization_id=ORG,
            name="helper",
            provider="scripted",
            model="scripted-1",
            allowed_tools=("calculate",),
        ),
        now=now,
    )
    script = [{"tool": "calculate", "arguments": {"expression": f"{n} * 2"}} for n in range(5)]
    task_ids = [
        postgres_store.create_task(
            NewTask(agent_id=agent.id, organization_id=ORG, title=f"Task {n}", context={"script": script}),
            now=now,
        ).id
        for n in range(3)
    ]
    worker = workers(env)

    # When the tasks are queued and run (each publishing about 25 events, all refused)
    producer = WorkerProcess.run_python(
        env, f"from actors import agent_task_queue; agent_task_queue.add_tasks({task_ids!r})"
    )
    assert producer.returncode == 0, producer.stderr
    wait_until(
        lambda: all(postgres_store.get_task(t).status == TaskStatus.COMPLETED for t in task_ids),  # type: ignore[union-attr]
        timeout_s=60,
        what="the tasks to complete",
    )

    # Then every task completed, the worker said once that events are not published, and their
    # events are still readable: rebuilt from the database, as no stream exists
    assert worker.log().count("live event(s) not published") == 1, worker.log()
    assert "Redis refused them" in worker.log()
    reader = WorkerProcess.run_python(
        env,
        "from actors import agent_task_queue\n"
        f"print(' '.join(e.type for e in agent_task_queue.events({task_ids[0]!r}, follow=False)))",
    )
    assert reader.returncode == 0, reader.stderr
    assert reader.stdout.split()[0] == "queued" and reader.stdout.split()[-1] == "completed"
    assert reader.stdout.split().count("tool_completed") == 5


def test_the_demo_prints_the_financial_reports_events_as_they_happen(redis_url: str, tmp_path: Path) -> None:
    env = command_env(REDIS_URL=redis_url, AGENTQ_SQLITE_PATH=str(tmp_path / "demo.db"))

    result = subprocess.run(
        [sys.executable, "-m", "actors.cli", "demo", "--timeout", "60"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    followed = result.stdout.split("Live events of task ", 1)[1].split("\nResults:", 1)[0]
    kinds = re.findall(r"^  \+ *[\d.]+s  (\w+)", followed, re.MULTILINE)
    step = ["llm_started", "llm_completed", "tool_started", "tool_completed"]
    deltas = kinds.count("llm_delta")
    assert kinds == ["queued", "running", *step, *step, "llm_started"] + ["llm_delta"] * deltas + [
        "llm_completed",
        "completed",
    ]
    assert deltas >= 2  # the answer streamed word by word, 40 ms apart, published at most every 100 ms
    assert "calculate -> 11500" in result.stdout and "Results:" in result.stdout.split("Live events")[1]
