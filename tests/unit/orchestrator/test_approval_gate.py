"""Tool calls that wait for a person: the run stops at the call and records it; after the decision it resumes
from the ledger and runs the tool once (approved) or hands the model the reason (rejected)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator import ModelResponse, Orchestrator, ProviderRegistry, default_registry
from orchestrator.approvals import (
    ApprovalLedger,
    ApprovalRequired,
    ApprovalsNeedLedger,
    decision_of,
    never_ran,
    rejection_result,
)
from orchestrator.ledger import NoLedger, UnfinishedToolNotRepeated
from orchestrator.tools import ToolRegistry
from tests.unit.orchestrator.test_resume import (
    TASK,
    ListLedger,
    QueueProvider,
    Row,
    agent,
    answer,
    tool_calls,
)


@dataclass
class WaitRow(Row):
    """A recorded step with its approval, as the task store keeps it."""

    approval: dict[str, Any] | None = None


class ApprovalListLedger(ListLedger):
    """The in-list ledger that can also record a call waiting for approval, and take decisions."""

    def await_approval(self, seq: int, name: str, input: Mapping[str, Any]) -> None:
        self.writes.append(("await", seq))
        row = self._row(seq)
        assert row is None or row.status != "completed"
        waiting = WaitRow(
            seq, "tool", name, "awaiting_approval", dict(input), approval={"requested_at": "t0"}
        )
        self.rows = [other for other in self.rows if other.seq != seq] + [waiting]
        self.rows.sort(key=lambda other: other.seq)

    def decide(self, verdict: str, reason: str | None = None) -> None:
        """What ``decide_approval`` does to the waiting step."""
        [row] = [row for row in self.rows if row.status == "awaiting_approval"]
        assert isinstance(row, WaitRow) and row.approval is not None
        row.approval.update(decision=verdict, decided_by="ana", note=reason)
        if verdict == "rejected":
            row.status, row.output = (
                "completed",
                {"content": rejection_result(reason or ""), "is_error": True},
            )


class RefundArgs(BaseModel):
    amount: int


@dataclass
class Bank:
    refunds: list[int]
    invoices: list[int]


def orchestrator(provider: QueueProvider, bank: Bank, *, idempotent: bool = False) -> Orchestrator:
    tools: ToolRegistry = default_registry()

    @tools.tool(
        name="refund",
        description="Refunds a customer.",
        args=RefundArgs,
        requires_approval=True,
        idempotent=idempotent,
    )
    def refund(args: RefundArgs) -> str:
        bank.refunds.append(args.amount)
        return f"refunded {args.amount}"

    @tools.tool(name="send_invoice", description="Sends an invoice.", args=RefundArgs)
    def send_invoice(args: RefundArgs) -> str:
        bank.invoices.append(args.amount)
        return f"invoice {args.amount} sent"

    return Orchestrator(ProviderRegistry({"queue": lambda: provider}), tools)


def refund_call(
    call_id: str = "c1", amount: int = 30, *, reasoning: str | None = "Refund the order."
) -> ModelResponse:
    response = tool_calls((call_id, "refund", {"amount": amount}))
    return ModelResponse(
        reasoning, response.tool_calls, response.usage, response.model, response.finish_reason
    )


AGENT = agent(allowed_tools=("refund", "send_invoice", "calculate"))


def wait_for_refund(provider: QueueProvider, bank: Bank, ledger: ApprovalListLedger) -> ApprovalRequired:
    with pytest.raises(ApprovalRequired) as raised:
        orchestrator(provider, bank).run(AGENT, TASK, ledger=ledger)
    return raised.value


def test_a_call_of_a_tool_that_requires_approval_waits_and_the_tool_does_not_run() -> None:
    provider, bank, ledger = QueueProvider(refund_call()), Bank([], []), ApprovalListLedger()

    waiting = wait_for_refund(provider, bank, ledger)

    assert (waiting.tool, waiting.seq, waiting.arguments, waiting.awaits_approval) == (
        "refund",
        1,
        {"amount": 30},
        True,
    )
    assert bank.refunds == [] and len(provider.requests) == 1
    assert ledger.writes == [("start", 0), ("complete", 0), ("await", 1)]
    row = ledger.rows[1]
    assert (row.kind, row.name, row.status) == ("tool", "refund", "awaiting_approval")
    assert row.input is not None
    assert (row.input["arguments"], row.input["call_id"], row.input["reasoning"]) == (
        {"amount": 30},
        "c1",
        "Refund the order.",
    )
    assert row.input["idempotency_key"] == "task-1:0:1"
    # the run's usage so far and its transcript travel on the error, for the run row
    assert waiting.usage.input_tokens == 10
    assert waiting.transcript[-1]["type"] == "approval" and waiting.transcript[-1]["decision"] is None


def test_an_agents_approval_tools_make_any_tool_wait() -> None:
    provider, bank, ledger = (
        QueueProvider(tool_calls(("c1", "send_invoice", {"amount": 9}))),
        Bank([], []),
        ApprovalListLedger(),
    )

    with pytest.raises(ApprovalRequired) as raised:
        orchestrator(provider, bank).run(
            agent(allowed_tools=("send_invoice",), approval_tools=("send_invoice",)), TASK, ledger=ledger
        )

    assert raised.value.tool == "send_invoice" and bank.invoices == []


def test_after_an_approval_the_tool_runs_once_and_the_first_model_call_is_not_repeated() -> None:
    provider, bank, ledger = QueueProvider(refund_call()), Bank([], []), ApprovalListLedger()
    wait_for_refund(provider, bank, ledger)
    ledger.decide("approved", "ok")
    provider.answers.append(answer("Refunded."))

    result = orchestrator(provider, bank).run(AGENT, TASK, ledger=ledger)

    assert result.output == "Refunded." and bank.refunds == [30]
    assert len(provider.requests) == 2 and provider.requests[1].messages[-1].content == "refunded 30"
    assert [(row.seq, row.status) for row in ledger.rows] == [
        (0, "completed"),
        (1, "completed"),
        (2, "completed"),
    ]
    assert decision_of(ledger.rows[1]) == "approved"  # the decision stays on the step
    approval = next(entry for entry in result.transcript if entry["type"] == "approval")
    assert (approval["decision"], approval["decided_by"], approval["note"]) == ("approved", "ana", "ok")


def test_after_a_rejection_the_model_reads_the_reason_and_the_tool_never_runs() -> None:
    provider, bank, ledger = QueueProvider(refund_call()), Bank([], []), ApprovalListLedger()
    wait_for_refund(provider, bank, ledger)
    ledger.decide("rejected", "the order was already refunded")
    provider.answers.append(answer("I did not refund it."))

    result = orchestrator(provider, bank).run(AGENT, TASK, ledger=ledger)

    assert result.output == "I did not refund it." and bank.refunds == []
    message = provider.requests[1].messages[-1]
    assert (message.role, message.content, message.is_error) == (
        "tool",
        "rejected by a person: the order was already refunded",
        True,
    )
    assert len(provider.requests) == 2


def test_a_run_resumed_before_any_decision_asks_again_without_calling_the_model() -> None:
    provider, bank, ledger = QueueProvider(refund_call()), Bank([], []), ApprovalListLedger()
    wait_for_refund(provider, bank, ledger)

    again = wait_for_refund(provider, bank, ledger)

    assert again.seq == 1 and len(provider.requests) == 1 and bank.refunds == []
    assert ledger.writes[-1] == ("await", 1)


def test_a_wait_that_timed_out_is_asked_again_when_resumed_not_refused_as_unfinished() -> None:
    provider, bank, ledger = QueueProvider(refund_call()), Bank([], []), ApprovalListLedger()
    wait_for_refund(provider, bank, ledger)
    row = ledger.rows[1]
    assert isinstance(row, WaitRow) and row.approval is not None
    row.status, row.error = "failed", "approval timed out"
    row.approval["decision"] = "timed_out"

    again = wait_for_refund(provider, bank, ledger)

    assert again.seq == 1 and bank.refunds == [] and ledger.rows[1].status == "awaiting_approval"


def test_an_approved_tool_whose_run_died_inside_it_is_not_repeated() -> None:
    provider, bank, ledger = QueueProvider(refund_call()), Bank([], []), ApprovalListLedger()
    wait_for_refund(provider, bank, ledger)
    ledger.decide("approved")
    ledger.rows[1].status = "started"  # the worker died inside the approved tool

    with pytest.raises(UnfinishedToolNotRepeated):
        orchestrator(provider, bank).run(AGENT, TASK, ledger=ledger)
    assert bank.refunds == []


def test_of_two_calls_in_one_turn_the_first_runs_and_the_second_waits() -> None:
    provider = QueueProvider(
        tool_calls(("c1", "send_invoice", {"amount": 5}), ("c2", "refund", {"amount": 7}))
    )
    bank, ledger = Bank([], []), ApprovalListLedger()

    waiting = wait_for_refund(provider, bank, ledger)
    assert waiting.seq == 2 and bank.invoices == [5] and bank.refunds == []

    ledger.decide("approved")
    provider.answers.append(answer("done"))
    assert orchestrator(provider, bank).run(AGENT, TASK, ledger=ledger).output == "done"
    assert bank.invoices == [5] and bank.refunds == [7]


def test_a_tool_the_agent_may_not_use_needs_no_approval_it_never_runs() -> None:
    provider, bank = QueueProvider(refund_call(), answer("ok")), Bank([], [])

    result = orchestrator(provider, bank).run(
        agent(allowed_tools=("send_invoice",)), TASK, ledger=ApprovalListLedger()
    )

    assert result.output == "ok" and bank.refunds == []
    assert provider.requests[1].messages[-1].content == "tool 'refund' is not allowed for this agent"


def test_approvals_need_a_ledger_that_can_wait() -> None:
    provider, bank = QueueProvider(refund_call()), Bank([], [])

    with pytest.raises(ApprovalsNeedLedger, match="AGENTQ_STEP_LEDGER"):
        orchestrator(provider, bank).run(AGENT, TASK, ledger=NoLedger("task-1:0"))
    assert not isinstance(NoLedger(), ApprovalLedger) and bank.refunds == []


def test_never_ran_tells_ended_waits_from_calls_that_may_have_run() -> None:
    def row(status: str, decision: str | None) -> WaitRow:
        approval = (
            {"requested_at": "t0"} if decision is None else {"requested_at": "t0", "decision": decision}
        )
        return WaitRow(1, "tool", "refund", status, {}, approval=approval)

    assert never_ran(row("awaiting_approval", None))
    assert never_ran(row("failed", "timed_out")) and never_ran(row("failed", "cancelled"))
    assert not never_ran(row("started", "approved")) and not never_ran(row("failed", "approved"))
    assert not never_ran(Row(1, "tool", "refund", "started", {}))  # no approval at all: it may have run
