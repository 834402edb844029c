"""``async def`` tools: awaited on the run's event loop, bounded by their timeout, cancelled with the run."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import pytest
from pydantic import BaseModel

from orchestrator import ModelRequest, ModelResponse, Orchestrator, ProviderRegistry, RunCancelled
from orchestrator.cancel import CancelSignal
from orchestrator.errors import ToolTimeout
from orchestrator.tools import ToolContext, ToolOutcome, ToolRegistry, current_tool_call
from tests.unit.orchestrator.test_resume import TASK, ListLedger, agent, answer, tool_calls


class Seconds(BaseModel):
    seconds: float


class Answers:
    """Gives its answers in order."""

    name = "queue"

    def __init__(self, *answers: ModelResponse) -> None:
        self.answers = list(answers)
        self.requests: list[ModelRequest] = []

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        return self.answers[len(self.requests) - 1]


def registry(started: threading.Event, cancelled: threading.Event) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool(
        name="nap", description="Sleeps on the loop, then answers with its idempotency key.", args=Seconds
    )
    async def nap(args: Seconds) -> str:
        call = current_tool_call()
        assert call is not None
        started.set()
        try:
            await asyncio.sleep(args.seconds)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return f"slept on {threading.current_thread().name} for {call.idempotency_key}"

    return tools


def run(provider: Answers, tools: ToolRegistry, **options: object) -> tuple[str, ListLedger]:
    ledger = ListLedger()
    spec = replace(agent(allowed_tools=("nap",)), **options)  # type: ignore[arg-type]
    result = Orchestrator(ProviderRegistry({"queue": lambda: provider}), tools).run(spec, TASK, ledger=ledger)
    return result.output, ledger


def test_an_async_tool_is_awaited_on_the_runs_event_loop_and_its_result_reaches_the_model() -> None:
    provider = Answers(tool_calls(("c1", "nap", {"seconds": 0.01})), answer("rested"))
    tools = registry(threading.Event(), threading.Event())

    output, ledger = run(provider, tools)

    assert output == "rested"
    tool_result = provider.requests[1].messages[-1]
    assert tool_result.role == "tool" and tool_result.content.startswith("slept on agentq-loop for ")
    assert [(row.kind, row.status) for row in ledger.rows] == [
        ("llm", "completed"),
        ("tool", "completed"),
        ("llm", "completed"),
    ]


def test_an_async_tool_past_its_timeout_is_cancelled_and_the_run_fails_with_tool_timeout() -> None:
    started, cancelled = threading.Event(), threading.Event()
    provider = Answers(tool_calls(("c1", "nap", {"seconds": 30})), answer("never"))

    with pytest.raises(ToolTimeout):
        run(provider, registry(started, cancelled), tool_timeout_s=0.1)
    assert started.is_set() and cancelled.wait(5)


def test_cancelling_the_run_cancels_an_async_tool_at_once() -> None:
    started, cancelled = threading.Event(), threading.Event()
    provider = Answers(tool_calls(("c1", "nap", {"seconds": 30})), answer("never"))
    signal = CancelSignal()

    def cancel_once_started() -> None:
        if started.wait(10):
            signal.set()

    threading.Thread(target=cancel_once_started).start()
    orchestrator = Orchestrator(ProviderRegistry({"queue": lambda: provider}), registry(started, cancelled))

    began = time.monotonic()
    with pytest.raises(RunCancelled, match="during tool call"):
        orchestrator.run(agent(allowed_tools=("nap",)), TASK, ledger=ListLedger(), cancel=signal)
    assert time.monotonic() - began < 5 and cancelled.wait(5)


def test_an_async_tool_called_from_sync_code_runs_to_its_result() -> None:
    tools = registry(threading.Event(), threading.Event())
    outcome = tools.execute("nap", {"seconds": 0}, context=ToolContext("t", 0, "t:0:0"))
    assert outcome == ToolOutcome(f"slept on {threading.current_thread().name} for t:0:0")
