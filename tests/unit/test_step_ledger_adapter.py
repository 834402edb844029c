"""``StoreLedger``: how one attempt's steps reach the task store, and what a refused or failed write does."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from actors.step_ledger import StoreLedger, attempt_ledger
from orchestrator.ledger import LLM, TOOL, NoLedger, StepNotRecorded
from taskstore import (
    Claim,
    InMemoryTaskStore,
    NewAgent,
    NewTask,
    StepStatus,
    StoreUnavailable,
    Usage,
    new_id,
)
from tests.conftest import Clock

ORG = "44444444-4444-4444-8444-444444444444"


class FlakyStore(InMemoryTaskStore):
    """The in-memory store, unreachable for step writes while ``down``."""

    down = False

    def start_step(self, *args: Any, **kwargs: Any) -> bool:
        if self.down:
            raise StoreUnavailable("connection refused")
        return super().start_step(*args, **kwargs)


def claimed(store: InMemoryTaskStore, clock: Clock) -> Claim:
    agent = store.create_agent(NewAgent(organization_id=ORG, name="a", kind="billing"), now=clock())
    task = store.create_task(NewTask(agent_id=agent.id, organization_id=ORG, title="t"), now=clock())
    assert store.mark_queued(task.id, priority=None, run_at=clock(), now=clock())
    claim = store.claim(
        task.id, run_id=new_id(), worker_id="w", lease_until=clock() + timedelta(minutes=1), now=clock()
    )
    assert claim is not None
    return claim


def test_a_model_call_is_written_once_when_it_ends_and_the_final_answer_not_at_all(clock: Clock) -> None:
    store = InMemoryTaskStore()
    claim = claimed(store, clock)
    ledger = StoreLedger(store, claim, clock=clock)

    ledger.start(0, LLM, "m", {"turn": 1})
    assert store.get_steps(claim.task.id) == []  # nothing written before the call ends
    clock.advance(2)
    ledger.complete(0, {"content": None, "tool_calls": [{"id": "c1"}]}, input_tokens=5)
    ledger.start(1, TOOL, "calculate", {"call_id": "c1"})
    ledger.complete(1, {"content": "2", "is_error": False})
    ledger.start(2, LLM, "m", {"turn": 2})
    ledger.complete(2, {"content": "done", "tool_calls": []}, input_tokens=7, last=True)

    steps = store.get_steps(claim.task.id)
    assert [(step.seq, step.status) for step in steps] == [
        (0, StepStatus.COMPLETED),
        (1, StepStatus.COMPLETED),
    ]
    assert (steps[0].started_at, steps[0].finished_at) == (clock() - timedelta(seconds=2), clock())
    assert ledger.last is not None and (ledger.last.seq, ledger.last.input_tokens) == (2, 7)
    assert ledger.scope == f"{claim.task.id}:0" and ledger.queue == "billing"


def test_a_refused_write_flags_the_attempt_lost_and_is_not_retryable(clock: Clock) -> None:
    store = InMemoryTaskStore()
    claim = claimed(store, clock)
    lost: list[bool] = []
    ledger = StoreLedger(store, claim, lost=lambda: lost.append(True), clock=clock)
    store.request_cancel(claim.task.id, now=clock())
    store.finish_cancelled(claim.task.id, claim.run_id, usage=Usage(), transcript=None, now=clock())

    with pytest.raises(StepNotRecorded, match="no longer holds the task") as caught:
        ledger.start(0, TOOL, "send_invoice", {})

    assert caught.value.retryable is False and lost == [True]


def test_an_unreachable_store_fails_the_step_as_retryable(clock: Clock) -> None:
    store = FlakyStore()
    claim = claimed(store, clock)
    lost: list[bool] = []
    ledger = StoreLedger(store, claim, lost=lambda: lost.append(True), clock=clock)
    store.down = True

    with pytest.raises(StepNotRecorded, match="step 0 could not be recorded: connection refused") as caught:
        ledger.start(0, TOOL, "send_invoice", {})

    assert caught.value.retryable is True and lost == []
    assert isinstance(caught.value.__cause__, StoreUnavailable)


def test_a_failed_model_call_is_written_failed_and_its_fallback_takes_the_step(clock: Clock) -> None:
    store = InMemoryTaskStore()
    claim = claimed(store, clock)
    ledger = StoreLedger(store, claim, clock=clock)

    ledger.start(0, LLM, "primary", {"turn": 1})
    ledger.fail(0, "ProviderUnavailable: 503")
    [failed] = store.get_steps(claim.task.id)
    ledger.start(0, LLM, "fallback", {"turn": 1})
    ledger.complete(0, {"content": "x", "tool_calls": [{"id": "c"}]})

    assert (failed.status, failed.error, failed.name) == (
        StepStatus.FAILED,
        "ProviderUnavailable: 503",
        "primary",
    )
    [step] = store.get_steps(claim.task.id)
    assert (step.status, step.name, step.error) == (StepStatus.COMPLETED, "fallback", None)


def test_without_the_ledger_nothing_is_written_but_keys_keep_the_firing(clock: Clock) -> None:
    store = InMemoryTaskStore()
    claim = claimed(store, clock)

    ledger = attempt_ledger(store, claim, enabled=False, lost=lambda: None)

    assert isinstance(ledger, NoLedger) and ledger.scope == f"{claim.task.id}:0"
    ledger.start(0, TOOL, "x", {})
    assert ledger.steps() == () and store.get_steps(claim.task.id) == []
    assert isinstance(attempt_ledger(store, claim, enabled=True, lost=lambda: None), StoreLedger)
