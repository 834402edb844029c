"""Cancelling a run in the middle of a model call or a tool call: it stops at once, the step is failed
"cancelled", a tool is told."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from orchestrator import ModelRequest, ModelResponse, Orchestrator, ProviderRegistry, RunCancelled
from orchestrator.cancel import CancelSignal, until_cancelled
from orchestrator.tools import ToolRegistry, current_tool_call
from tests.unit.orchestrator.test_resume import TASK, ListLedger, agent, answer, tool_calls

#: How long the slow provider and tools would take if nothing stopped them.
SLOW_S = 30.0


class SlowProvider:
    """Gives its answers in order; the last one after :data:`SLOW_S` (or when released): a call that hangs."""

    name = "queue"

    def __init__(self, *answers: ModelResponse) -> None:
        self.answers = list(answers)
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        if self.calls == len(self.answers):
            self.started.set()
            self.release.wait(SLOW_S)
        return self.answers[self.calls - 1]


class Seconds(BaseModel):
    seconds: float


@pytest.fixture
def told() -> Iterator[list[float]]:
    """When (monotonic) the polite tool saw the cancellation."""
    yield []


def tools(told: list[float], started: threading.Event) -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool(
        name="polite_wait", description="Waits, stopping early when the run is cancelled.", args=Seconds
    )
    def polite_wait(args: Seconds) -> str:
        call = current_tool_call()
        assert call is not None
        started.set()
        if call.cancelled.wait(args.seconds):
            told.append(time.monotonic())
            return "stopped early"
        return "waited"

    @registry.tool(name="stubborn_wait", description="Waits, whatever happens.", args=Seconds)
    def stubborn_wait(args: Seconds) -> str:
        started.set()
        time.sleep(args.seconds)
        return "waited"

    return registry


def cancel_when(event: threading.Event, signal: CancelSignal) -> float:
    """Set ``signal`` once ``event`` is set (from another thread); returns when it was set (monotonic)."""
    assert event.wait(10), "the slow call never started"
    time.sleep(0.05)
    moment = time.monotonic()
    signal.set()
    return moment


def run_and_cancel(
    orchestrator: Orchestrator, started: threading.Event, tools_allowed: tuple[str, ...] = ()
) -> tuple[float, ListLedger]:
    signal, ledger = CancelSignal(), ListLedger()
    moments: list[float] = []
    canceller = threading.Thread(target=lambda: moments.append(cancel_when(started, signal)))
    canceller.start()
    with pytest.raises(RunCancelled):
        orchestrator.run(agent(allowed_tools=tools_allowed), TASK, ledger=ledger, cancel=signal)
    stopped = time.monotonic()
    canceller.join(10)
    return stopped - moments[0], ledger


def test_a_model_call_in_flight_is_abandoned_at_once_and_its_step_failed_cancelled() -> None:
    provider = SlowProvider(answer("too late"))
    orchestrator = Orchestrator(ProviderRegistry({"queue": lambda: provider}), ToolRegistry())

    delay, ledger = run_and_cancel(orchestrator, provider.started)

    assert delay < 1.0, delay
    assert [(row.seq, row.kind, row.status, row.error) for row in ledger.rows] == [
        (0, "llm", "failed", "cancelled")
    ]
    provider.release.set()


def test_a_polite_tool_is_told_and_the_run_stops_at_once(told: list[float]) -> None:
    started = threading.Event()
    provider = SlowProvider(tool_calls(("c1", "polite_wait", {"seconds": SLOW_S})), answer("never asked"))
    orchestrator = Orchestrator(ProviderRegistry({"queue": lambda: provider}), tools(told, started))

    delay, ledger = run_and_cancel(orchestrator, started, ("polite_wait",))

    assert delay < 1.0, delay
    assert [(row.seq, row.kind, row.status, row.error) for row in ledger.rows] == [
        (0, "llm", "completed", None),
        (1, "tool", "failed", "cancelled"),
    ]
    deadline = time.monotonic() + 5
    while not told and time.monotonic() < deadline:
        time.sleep(0.01)
    assert told, "the tool never saw the cancellation"


def test_a_tool_that_ignores_the_signal_is_not_waited_for() -> None:
    started = threading.Event()
    provider = SlowProvider(
        tool_calls(("c1", "stubborn_wait", {"seconds": 3})), answer("never"), answer("never")
    )
    orchestrator = Orchestrator(ProviderRegistry({"queue": lambda: provider}), tools([], started))

    delay, ledger = run_and_cancel(orchestrator, started, ("stubborn_wait",))

    assert delay < 1.0, delay
    assert ledger.rows[1].status == "failed" and ledger.rows[1].error == "cancelled"


def test_a_signal_set_before_the_run_stops_it_before_any_model_call() -> None:
    provider = SlowProvider(answer("no"))
    signal = CancelSignal()
    signal.set()

    with pytest.raises(RunCancelled, match="before model call 1"):
        Orchestrator(ProviderRegistry({"queue": lambda: provider}), ToolRegistry()).run(
            agent(allowed_tools=()), TASK, cancel=signal
        )
    assert provider.calls == 0


def test_a_cancellable_call_returns_its_result_or_raises_its_error_in_the_callers_context() -> None:
    variable: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    signal = CancelSignal()

    async def calls() -> None:
        variable.set("the run")

        async def who() -> str:
            return variable.get()

        async def divide() -> float:
            return 1 / 0

        assert await until_cancelled(who(), signal, "a call") == "the run"
        with pytest.raises(ZeroDivisionError):
            await until_cancelled(divide(), signal, "a call")
        assert await until_cancelled(who(), None, "a call") == "the run"

    asyncio.run(calls())


def test_a_signal_set_from_another_thread_cancels_the_call_at_once_and_keeps_its_first_reason() -> None:
    signal = CancelSignal()
    cancelled = threading.Event()

    async def hang() -> str:
        try:
            await asyncio.sleep(SLOW_S)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    async def calls() -> float:
        timer = threading.Timer(0.05, lambda: signal.set("lease lost"))
        timer.start()
        began = time.monotonic()
        with pytest.raises(RunCancelled, match="during the call"):
            await until_cancelled(hang(), signal, "the call")
        took = time.monotonic() - began
        # once set, a later call is refused before it starts (its coroutine is closed, never run)
        with pytest.raises(RunCancelled, match="before the next call"):
            await until_cancelled(hang(), signal, "the next call")
        return took

    took = asyncio.run(calls())

    assert took < 1.0 and cancelled.is_set()
    signal.set("cancel requested")
    assert signal.reason == "lease lost"


def test_many_calls_after_a_cancelled_one_are_not_held_up() -> None:
    async def calls() -> list[int]:
        async def value(index: int) -> int:
            await asyncio.sleep(0)
            return index

        return list(
            await asyncio.gather(*(until_cancelled(value(i), CancelSignal(), "a call") for i in range(50)))
        )

    assert asyncio.run(calls()) == list(range(50))
