"""Approvals and cancels with real processes: ``dramatiq actors -t 1`` workers, decisions and cancels taken
from other processes (``agentq`` and a Python producer), Postgres, Redis, and the official OpenAI SDK over
HTTP to the fake server in this test process (it counts every model call); tools append to a file, so every
execution is counted across processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskstore import RunStatus, StepStatus, TaskStatus, TaskStore
from tests.acceptance.processes import ROOT, WorkerProcess, command_env
from tests.fakes.http_server import FakeReply
from tests.fakes.openai_server import FakeOpenAIServer, openai_text, openai_tool_calls
from tests.fakes.tools import lines
from tests.harness import Harness, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]

TOOLS = "tests.fakes.approval_tools:tools"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def env(postgres_url: str, redis_url: str, server: FakeOpenAIServer) -> dict[str, str]:
    return command_env(
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        AGENTQ_TOOLS=TOOLS,
        OPENAI_API_KEY="sk-test-not-a-real-key",
        OPENAI_BASE_URL=server.base_url,
        AGENTQ_RECONCILE_INTERVAL_MS="1000",
    )


@pytest.fixture
def single_thread_worker(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], WorkerProcess]]:
    """Start ``dramatiq actors --processes 1 --threads 1``; killed at teardown."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str]) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log", threads=1)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.close()


def agentq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``agentq …`` in its own process."""
    command = [sys.executable, "-m", "actors.cli.commands", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def status_of(store: TaskStore, task_id: str) -> TaskStatus | None:
    task = store.get_task(task_id)
    return task.status if task else None


def wait_status(app: Harness, task_id: str, wanted: TaskStatus, timeout_s: float = 45) -> None:
    wait_until(lambda: status_of(app.store, task_id) == wanted, timeout_s=timeout_s, what=f"{wanted.value}")


def refund_reply(path: Path) -> FakeReply:
    reply = openai_tool_calls(("refund", {"path": str(path), "amount": 30}))
    reply.body["choices"][0]["message"]["content"] = "The parcel never arrived: refund it."
    return reply


def first_calls(server: FakeOpenAIServer) -> int:
    """Requests that are a run's first model call (the conversation is the task alone)."""
    return sum(1 for request in server.requests if len(request.body["messages"]) == 1)


def refund_agent(app: Harness) -> str:
    return app.agent(provider="openai", model="gpt-4o-mini", allowed_tools=("refund",))


def test_a_waiting_task_frees_the_only_thread_and_resumes_after_an_approval_from_another_process(
    app: Harness,
    env: dict[str, str],
    server: FakeOpenAIServer,
    single_thread_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    refunds = tmp_path / "refunds.txt"
    worker = single_thread_worker(env)
    waiting = app.task(refund_agent(app), title="Refund order 1042")
    server.enqueue(refund_reply(refunds))
    app.queue.add_task(waiting)
    wait_status(app, waiting, TaskStatus.AWAITING_APPROVAL)

    # while it waits, another task runs on the worker's single thread: nothing is held
    server.enqueue(openai_text("Summary written."))
    other = app.task(app.agent(provider="openai", model="gpt-4o-mini"), title="Summarize the week")
    app.queue.add_task(other)
    wait_status(app, other, TaskStatus.COMPLETED)
    assert status_of(app.store, waiting) == TaskStatus.AWAITING_APPROVAL and lines(refunds) == []
    listed = agentq(env, "approvals")
    assert listed.returncode == 0 and waiting in listed.stdout and '"tool": "refund"' in listed.stdout

    # a person approves from another process: the tool runs exactly once and the task completes
    server.enqueue(openai_text("Refunded 30."))
    approved = agentq(env, "approve", waiting, "--note", "under the limit", "--by", "ana@example.com")
    assert approved.returncode == 0, approved.stderr
    wait_status(app, waiting, TaskStatus.COMPLETED)

    assert lines(refunds) == [f"refund 30 {waiting}:0:1"]
    assert first_calls(server) == 2  # one per task: the waiting task's first model call was not repeated
    assert len(server.requests) == 3
    job = app.queue.get_job(waiting)
    assert job is not None and job.result is not None and job.result["output"] == "Refunded 30."
    assert [run.status for run in job.runs] == [RunStatus.AWAITING_APPROVAL, RunStatus.COMPLETED]
    tool = app.store.get_steps(waiting)[1]
    assert tool.approval is not None and tool.approval["decided_by"] == "ana@example.com"
    assert f"Job {waiting} awaiting approval of tool 'refund'" in worker.log()


def test_a_rejection_from_another_process_is_the_tool_result_and_the_tool_never_runs(
    app: Harness,
    env: dict[str, str],
    server: FakeOpenAIServer,
    single_thread_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    refunds = tmp_path / "refunds.txt"
    single_thread_worker(env)
    task_id = app.task(refund_agent(app), title="Refund order 1043")
    server.enqueue(refund_reply(refunds), openai_text("Not refunded: it was paid by card."))
    app.queue.add_task(task_id)
    wait_status(app, task_id, TaskStatus.AWAITING_APPROVAL)

    code = (
        "from actors import agent_task_queue\n"
        f"agent_task_queue.reject({task_id!r}, 'paid by card, refund there', decided_by='bo')\n"
    )
    rejected = WorkerProcess.run_python(env, code)
    assert rejected.returncode == 0, rejected.stderr
    wait_status(app, task_id, TaskStatus.COMPLETED)

    assert lines(refunds) == []
    tool_message = server.requests[1].body["messages"][-1]
    assert tool_message["content"] == "rejected by a person: paid by card, refund there"
    assert first_calls(server) == 1


def test_two_approvals_at_once_from_two_processes_run_the_tool_once(
    app: Harness,
    env: dict[str, str],
    server: FakeOpenAIServer,
    single_thread_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    refunds = tmp_path / "refunds.txt"
    single_thread_worker(env)
    task_id = app.task(refund_agent(app), title="Refund order 1044")
    server.enqueue(refund_reply(refunds), openai_text("Refunded."))
    app.queue.add_task(task_id)
    wait_status(app, task_id, TaskStatus.AWAITING_APPROVAL)

    command = [sys.executable, "-m", "actors.cli.commands", "approve", task_id]
    approvers = [
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(approver.wait(timeout=60), approver.communicate()[1]) for approver in approvers]
    wait_status(app, task_id, TaskStatus.COMPLETED)

    assert sorted(code for code, _ in results) == [0, 1], results
    assert any("not awaiting approval" in stderr for code, stderr in results if code == 1)
    assert len(lines(refunds)) == 1 and len(server.requests) == 2
    # and a decision for a task that waits for nothing is refused with a clear error
    again = agentq(env, "approve", task_id)
    assert again.returncode == 1 and "is completed, not awaiting approval" in again.stderr


def test_a_wait_past_the_approval_timeout_fails_the_task(
    app: Harness,
    env: dict[str, str],
    server: FakeOpenAIServer,
    single_thread_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    single_thread_worker({**env, "AGENTQ_APPROVAL_TIMEOUT_S": "2"})
    task_id = app.task(refund_agent(app), title="Refund order 1045")
    server.enqueue(refund_reply(tmp_path / "refunds.txt"))
    app.queue.add_task(task_id)
    wait_status(app, task_id, TaskStatus.AWAITING_APPROVAL)

    wait_status(app, task_id, TaskStatus.FAILED, timeout_s=30)

    job = app.queue.get_job(task_id)
    assert job is not None and job.failed_reason is not None
    assert job.failed_reason.startswith("approval timed out"), job.failed_reason
    tool = app.store.get_steps(task_id)[1]
    assert tool.status == StepStatus.FAILED and tool.approval is not None
    assert tool.approval["decision"] == "timed_out"


# --- cancelling in the middle of a call -------------------------------------------------------------------


def test_remove_job_from_another_process_cancels_a_model_call_that_takes_30_s_within_2_s(
    app: Harness,
    env: dict[str, str],
    server: FakeOpenAIServer,
    single_thread_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    worker = single_thread_worker(env)
    task_id = app.task(app.agent(provider="openai", model="gpt-4o-mini"), title="A slow answer")
    server.enqueue(FakeReply(openai_text("too late").body, delay_s=30))
    app.queue.add_task(task_id)
    wait_until(lambda: len(server.requests) == 1, timeout_s=30, what="the model call")

    code = (
        "import time\n"
        "from actors import agent_task_queue\n"
        "asked = time.time()\n"
        f"agent_task_queue.remove_job({task_id!r})\n"
        "print(asked)\n"
    )
    removed = WorkerProcess.run_python(env, code)
    assert removed.returncode == 0, removed.stderr
    wait_status(app, task_id, TaskStatus.CANCELLED, timeout_s=10)

    [run] = app.store.get_runs(task_id)
    assert run.status == RunStatus.CANCELLED and run.finished_at is not None
    took = run.finished_at.timestamp() - float(removed.stdout.split()[-1])
    assert took < 2.0, f"cancelled {took:.2f} s after remove_job was called"
    [step] = app.store.get_steps(task_id)
    assert (step.kind, step.status, step.error) == ("llm", StepStatus.FAILED, "cancelled")
    assert f"Job {task_id} asked to stop; interrupting its run" in worker.log()
    # the single thread is free again at once
    server.enqueue(openai_text("next"))
    other = app.task(app.agent(provider="openai", model="gpt-4o-mini"), title="Next")
    app.queue.add_task(other)
    wait_status(app, other, TaskStatus.COMPLETED, timeout_s=10)


def test_remove_job_cancels_a_long_tool_which_is_told_to_stop(
    app: Harness,
    env: dict[str, str],
    server: FakeOpenAIServer,
    single_thread_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    progress = tmp_path / "export.txt"
    single_thread_worker(env)
    agent = app.agent(provider="openai", model="gpt-4o-mini", allowed_tools=("slow_export",))
    task_id = app.task(agent, title="Export the orders")
    server.enqueue(openai_tool_calls(("slow_export", {"path": str(progress), "seconds": 30})))
    app.queue.add_task(task_id)
    wait_until(lambda: lines(progress) == ["started"], timeout_s=30, what="the tool to start")

    asked = time.time()
    removed = agentq(env, "remove", task_id)  # from another process, the command line
    assert removed.returncode == 0, removed.stderr
    wait_status(app, task_id, TaskStatus.CANCELLED, timeout_s=10)

    [run] = app.store.get_runs(task_id)
    assert run.finished_at is not None and run.status == RunStatus.CANCELLED
    took = run.finished_at.timestamp() - asked
    assert took < 5.0, f"cancelled {took:.2f} s after `agentq remove` started (its own start-up included)"
    wait_until(lambda: lines(progress) == ["started", "stopped"], timeout_s=5, what="the tool to stop")
    llm, tool = app.store.get_steps(task_id)
    assert (llm.status, tool.status, tool.error) == (StepStatus.COMPLETED, StepStatus.FAILED, "cancelled")
