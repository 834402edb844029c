"""A worker SIGKILLed part way through a run: the task resumes on another worker after its completed steps.

Real ``dramatiq actors`` processes, Postgres, Redis, and the official OpenAI/Anthropic SDKs over HTTP to the
local fake servers; the tool appends a line to a file, so every execution is counted across processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from taskstore import RunStatus, StepKind, StepStatus, TaskStatus, TaskStore
from tests.acceptance.processes import WorkerProcess, command_env
from tests.fakes.anthropic_server import FakeAnthropicServer, anthropic_text, anthropic_tool_uses
from tests.fakes.http_server import FakeReply, FakeServer
from tests.fakes.openai_server import FakeOpenAIServer, openai_text, openai_tool_calls
from tests.fakes.tools import lines
from tests.harness import Harness, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]

#: Short leases so a dead worker's task is recovered within seconds.
FAST = {"AGENTQ_STALLED_INTERVAL_MS": "2000", "AGENTQ_RECONCILE_INTERVAL_MS": "1000"}
TOOLS = "tests.fakes.tools:tools"


@dataclass(frozen=True)
class Provider:
    """One provider's fake server and how to read its wire format."""

    name: str
    model: str
    server: Callable[[], FakeServer]
    tools: Callable[..., FakeReply]
    text: Callable[..., FakeReply]

    def call_id(self, reply: FakeReply) -> str:
        """The id of the tool call in a scripted reply."""
        if self.name == "openai":
            return str(reply.body["choices"][0]["message"]["tool_calls"][0]["id"])
        return str(reply.body["content"][0]["id"])

    def result_ids(self, body: Any) -> list[str]:
        """The tool call ids a request answers with tool results."""
        messages = body["messages"]
        if self.name == "openai":
            return [m["tool_call_id"] for m in messages if m["role"] == "tool"]
        blocks = [b for m in messages if isinstance(m["content"], list) for b in m["content"]]
        return [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]


PROVIDERS = [
    Provider("openai", "gpt-4o-mini", FakeOpenAIServer, openai_tool_calls, openai_text),
    Provider("anthropic", "claude-haiku-4-5", FakeAnthropicServer, anthropic_tool_uses, anthropic_text),
]


@pytest.fixture(params=PROVIDERS, ids=lambda provider: provider.name)
def provider(request: pytest.FixtureRequest) -> Provider:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def server(provider: Provider) -> Iterator[FakeServer]:
    with provider.server() as fake:
        yield fake


def status_of(store: TaskStore, task_id: str) -> TaskStatus | None:
    task = store.get_task(task_id)
    return task.status if task else None


def test_a_worker_killed_during_the_second_model_call_resumes_after_the_tool(
    app: Harness,
    provider: Provider,
    server: FakeServer,
    postgres_url: str,
    redis_url: str,
    workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    # Given a tool-using run whose second model call hangs on the first worker
    invoices = tmp_path / "invoices.txt"
    first = provider.tools(("append_line", {"path": str(invoices), "text": "invoice"}))
    hanging = FakeReply(provider.text("never delivered").body, delay_s=30)
    server.enqueue(first, hanging, provider.text("Invoice sent."))
    prefix = provider.name.upper()
    env = command_env(
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        AGENTQ_TOOLS=TOOLS,
        **{f"{prefix}_API_KEY": "sk-test-key", f"{prefix}_BASE_URL": server.base_url},  # type: ignore[attr-defined]
        **FAST,
    )
    agent = app.agent(provider=provider.name, model=provider.model, allowed_tools=("append_line",))
    task_id = app.task(agent, title="Bill the customer")
    doomed = workers(env, "doomed")
    doomed.wait_ready()
    app.queue.add_task(task_id)
    wait_until(lambda: len(server.requests) == 2, timeout_s=45, what="the second model call")

    # When the worker is SIGKILLed while that call is in flight, and another worker recovers the task
    doomed.kill()
    survivor = workers(env, "survivor")
    wait_until(
        lambda: status_of(app.store, task_id) in (TaskStatus.COMPLETED, TaskStatus.FAILED),
        timeout_s=60,
        what="the task to end on the survivor",
    )

    # Then the task completes; the first model call was made once, the tool ran once
    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.COMPLETED, (job and job.failed_reason, survivor.log())
    assert job.result is not None and job.result["output"] == "Invoice sent."
    first_calls = [request for request in server.requests if not provider.result_ids(request.body)]
    assert len(first_calls) == 1 and len(server.requests) == 3
    assert lines(invoices) == [f"invoice {task_id}:0:1"]
    # the re-requested call carries the ledger's tool call id
    assert provider.result_ids(server.requests[2].body) == [provider.call_id(first)]
    # and the ledger shows every step once, completed
    assert [(step.seq, step.kind, step.status) for step in app.store.get_steps(task_id)] == [
        (0, StepKind.LLM, StepStatus.COMPLETED),
        (1, StepKind.TOOL, StepStatus.COMPLETED),
        (2, StepKind.LLM, StepStatus.COMPLETED),
    ]
    stalled, completed = job.runs
    assert (stalled.status, completed.status) == (RunStatus.STALLED, RunStatus.COMPLETED)
    # each model call that was answered is counted once: the first on the killed run (from the ledger)
    assert (stalled.input_tokens, completed.input_tokens, job.task.input_tokens) == (10, 10, 20)
    assert job.task.cost_usd > 0 and stalled.cost_usd is not None and stalled.cost_usd > 0
    assert f"[AgentTaskQueue] ⚠ Job {task_id} stalled - worker may have crashed" in survivor.log()


def test_a_non_idempotent_tool_cut_short_by_a_kill_is_not_repeated(
    app: Harness, postgres_url: str, redis_url: str, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # Given a tool that has done its work (the line is written) and is still running when its worker dies
    invoices = tmp_path / "invoices.txt"
    arguments = {"path": str(invoices), "text": "invoice", "sleep_ms": 30_000}
    env = command_env(DATABASE_URL=postgres_url, REDIS_URL=redis_url, AGENTQ_TOOLS=TOOLS, **FAST)
    agent = app.agent(allowed_tools=("append_line",))
    script = [{"tool": "append_line", "arguments": arguments}, {"answer": "Invoice sent."}]
    task_id = app.task(agent, title="Bill the customer", context={"script": script})
    doomed = workers(env, "doomed")
    doomed.wait_ready()
    app.queue.add_task(task_id)
    wait_until(lambda: len(lines(invoices)) == 1, timeout_s=45, what="the tool to do its work")

    # When the worker is SIGKILLed inside the tool and another worker recovers the task
    doomed.kill()
    survivor = workers(env, "survivor")
    wait_until(
        lambda: status_of(app.store, task_id) in (TaskStatus.COMPLETED, TaskStatus.FAILED),
        timeout_s=60,
        what="the task to end on the survivor",
    )

    # Then the tool is not run again and the task fails, saying why
    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.FAILED, survivor.log()
    assert job.failed_reason is not None
    assert "tool 'append_line' may already have run; not repeated" in job.failed_reason
    assert lines(invoices) == [f"invoice {task_id}:0:1"]
    assert [(step.seq, step.status) for step in app.store.get_steps(task_id)] == [
        (0, StepStatus.COMPLETED),
        (1, StepStatus.STARTED),
    ]
    assert [run.status for run in job.runs] == [RunStatus.STALLED, RunStatus.FAILED]


def test_a_run_cut_off_at_the_shutdown_deadline_resumes_after_its_tool(
    app: Harness, postgres_url: str, redis_url: str, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # Given a run that has called its tool and waits on its second model call when the worker stops
    invoices = tmp_path / "invoices.txt"
    env = command_env(DATABASE_URL=postgres_url, REDIS_URL=redis_url, AGENTQ_TOOLS=TOOLS, **FAST)
    agent = app.agent(allowed_tools=("append_line",))
    script = [
        {"tool": "append_line", "arguments": {"path": str(invoices), "text": "invoice"}},
        {"answer": "Invoice sent.", "sleep_ms": 3000},
    ]
    task_id = app.task(agent, title="Bill the customer", context={"script": script})
    impatient = workers({**env, "AGENTQ_SHUTDOWN_TIMEOUT_MS": "300"}, "impatient")
    impatient.wait_ready()
    app.queue.add_task(task_id)
    wait_until(lambda: len(lines(invoices)) == 1, timeout_s=45, what="the tool to run")

    # When SIGTERM cuts it off at the shutdown deadline and another worker recovers it
    assert impatient.terminate() == 0
    assert f"Job {task_id} cut off by shutdown" in impatient.log()
    workers(env, "next")
    wait_until(
        lambda: status_of(app.store, task_id) in (TaskStatus.COMPLETED, TaskStatus.FAILED),
        timeout_s=60,
        what="the task to end on the next worker",
    )

    # Then it completes without running the tool again, every step completed once
    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.COMPLETED, job and job.failed_reason
    assert lines(invoices) == [f"invoice {task_id}:0:1"]
    assert [(step.seq, step.status) for step in app.store.get_steps(task_id)] == [
        (0, StepStatus.COMPLETED),
        (1, StepStatus.COMPLETED),
        (2, StepStatus.COMPLETED),
    ]
    assert [run.status for run in job.runs] == [RunStatus.STALLED, RunStatus.COMPLETED]
    assert job.runs[0].input_tokens > 0  # the cut-off run's first model call, billed from the ledger
