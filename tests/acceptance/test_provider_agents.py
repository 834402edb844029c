"""Each provider's agent through a real `dramatiq actors`, configured only by environment variables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from taskstore import NewAgent, NewTask, TaskStatus, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import WorkerProcess, command_env
from tests.fakes.anthropic_server import FakeAnthropicServer, anthropic_text, anthropic_tool_uses
from tests.fakes.http_server import FakeServer
from tests.fakes.openai_server import FakeOpenAIServer, openai_text, openai_tool_calls
from tests.harness import ORG, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]


@pytest.fixture(params=["openai", "anthropic"])
def fake(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, FakeServer]]:
    if request.param == "openai":
        with FakeOpenAIServer() as openai:
            openai.enqueue(
                openai_tool_calls(("calculate", {"expression": "2 * 21"})),
                openai_tool_calls(("calculate", {"expression": "42 + 1"})),
                openai_text("The answer is 43."),
            )
            yield "openai", "gpt-4o-mini", openai
    else:
        with FakeAnthropicServer() as anthropic:
            anthropic.enqueue(
                anthropic_tool_uses(("calculate", {"expression": "2 * 21"})),
                anthropic_tool_uses(("calculate", {"expression": "42 + 1"})),
                anthropic_text("The answer is 43."),
            )
            yield "anthropic", "claude-haiku-4-5", anthropic


def test_a_tool_calling_agent_completes_under_dramatiq_actors(
    fake: tuple[str, str, FakeServer],
    postgres_store: PostgresTaskStore,
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    provider, model, server = fake
    prefix = provider.upper()
    env = command_env(
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        **{f"{prefix}_API_KEY": "sk-test-key", f"{prefix}_BASE_URL": server.base_url},  # type: ignore[attr-defined]
    )
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
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        producer = WorkerProcess.run_python(
            env, f"from actors import agent_task_queue; agent_task_queue.add_task({task.id!r})"
        )
        assert producer.returncode == 0, producer.stderr

        wait_until(
            lambda: postgres_store.get_task(task.id).status == TaskStatus.COMPLETED,  # type: ignore[union-attr]
            timeout_s=60,
            what=f"the {provider} agent to finish",
        )
    finally:
        worker.close()

    done = postgres_store.get_task(task.id)
    assert done is not None and done.result is not None and done.result["output"] == "The answer is 43."
    assert (done.input_tokens, done.output_tokens) == (30, 15) and done.cost_usd > 0
    [run] = postgres_store.get_runs(task.id)
    assert [step["result"] for step in run.transcript or [] if step["type"] == "tool"] == ["42", "43"]
    assert len(server.requests) == 3
