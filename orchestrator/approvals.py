"""Human approval of tool calls, as the agent loop sees it.

A tool call needs a person's approval when its tool is declared ``requires_approval=True`` in code or is
named in the agent's ``approval_tools`` (and the call would run at all: an allowed, known tool with valid
arguments). The loop then records the call's step as awaiting approval (:class:`ApprovalLedger`: tool,
arguments, the model's reasoning text of that turn) and stops with :class:`ApprovalRequired`, which is not a
failure: the caller ends the attempt and the task waits, holding no worker. A decision queues it again and
the run resumes from its step ledger (:mod:`orchestrator.replay`):

* **approved** — the step still waits, now with ``decision: approved``: the resumed run runs the tool once
  (the ledger's compare-and-set takes the step over), then the loop goes on;
* **rejected** — the decision completed the step with :func:`rejection_result` as its result, so the
  resumed run replays it like any completed tool call: the model reads ``rejected by a person: <reason>``
  and decides what to do next;
* **timed out** or **cancelled** — the step ended failed without the tool having run; a run that resumes
  it later (``retry_job(resume=True)``) asks again.

Approvals need the step ledger (the decision and the conversation so far live there): a run whose ledger
cannot wait fails with :class:`ApprovalsNeedLedger` instead of asking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from config.errors import short_repr
from orchestrator.errors import AgentRunError

__all__ = [
    "APPROVED",
    "CANCELLED",
    "DECISIONS",
    "REJECTED",
    "TIMED_OUT",
    "ApprovalLedger",
    "ApprovalRequired",
    "ApprovalsNeedLedger",
    "decision_of",
    "never_ran",
    "rejection_result",
]

#: What a person (or the queue) decided about a waiting call, as the step's ``approval["decision"]``.
APPROVED, REJECTED, TIMED_OUT, CANCELLED = "approved", "rejected", "timed_out", "cancelled"
DECISIONS = (APPROVED, REJECTED, TIMED_OUT, CANCELLED)
#: The step status of a call that waits for a decision.
AWAITING_APPROVAL = "awaiting_approval"


@runtime_checkable
class ApprovalLedger(Protocol):
    """A step ledger that can record a tool call waiting for a person (the task store's can)."""

    def await_approval(self, seq: int, name: str, input: Mapping[str, Any]) -> None:
        """Record step ``seq`` (tool ``name``; ``input`` as a tool step's, plus the model's ``reasoning``) as
        awaiting approval; raises :class:`~orchestrator.ledger.StepNotRecorded` when it cannot."""
        ...


class ApprovalRequired(AgentRunError):
    """The run reached a tool call a person must approve; the task waits for the decision.

    Not an error the task fails with: ``awaits_approval`` tells the caller to end the attempt without
    counting it (its usage and transcript so far are recorded on the run, as for any ending).

    Attributes:
        tool: The tool's name.
        seq: The call's step in the ledger.
        arguments: The call's arguments.
    """

    awaits_approval = True

    def __init__(self, tool: str, seq: int, arguments: Mapping[str, Any]) -> None:
        """Build the error.

        Args:
            tool: The tool's name.
            seq: The call's step.
            arguments: The arguments the model gave.
        """
        self.tool = tool
        self.seq = seq
        self.arguments = dict(arguments)
        super().__init__(f"awaiting approval of tool {short_repr(tool)} (step {seq})")


class ApprovalsNeedLedger(AgentRunError):
    """A tool call needs approval but the run records no steps (``AGENTQ_STEP_LEDGER=false``); not
    retryable."""

    def __init__(self, tool: str) -> None:
        """Build the error.

        Args:
            tool: The tool that needs approval.
        """
        self.tool = tool
        super().__init__(
            f"tool {short_repr(tool)} needs a person's approval, which needs the step ledger to wait and"
            " resume: set AGENTQ_STEP_LEDGER=true (the default), or stop requiring approval for it"
        )


def rejection_result(reason: str) -> str:
    """The tool result the model is given for a rejected call."""
    return f"rejected by a person: {reason}"


def decision_of(step: object) -> str | None:
    """The decision recorded on a step's approval (``approved``, ``rejected``, …), or None (none yet, or the
    step needed no approval). Reads ``step.approval`` when the step has one."""
    approval = getattr(step, "approval", None)
    if not isinstance(approval, Mapping):
        return None
    decision = approval.get("decision")
    return decision if isinstance(decision, str) else None


def never_ran(step: object) -> bool:
    """Whether an unfinished tool step is a wait that ended without the tool running (timed out, cancelled,
    or still waiting): repeating it cannot repeat a side effect."""
    if getattr(step, "status", None) == AWAITING_APPROVAL:
        return True
    return getattr(step, "approval", None) is not None and decision_of(step) in (TIMED_OUT, CANCELLED, None)
