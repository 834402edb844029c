"""What a task waiting for a person's approval waits for, and the decision records the facade writes.

``AgentTaskQueue.approve``/``reject`` check their arguments here, write the decision (who, when, note) on
the step that waits with one compare-and-set (``TaskStore.decide_approval``) and send the task's message;
``get_job(...).pending_approval`` and ``list_approvals()`` show :class:`PendingApproval`. See
:mod:`orchestrator.approvals` for how the run waits and resumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from actors.errors import InvalidArgument
from config.errors import short_repr
from orchestrator.approvals import APPROVED, REJECTED, rejection_result
from taskstore import ApprovalRequest, Step, StepStatus, Task
from taskstore.rules import approval_time

__all__ = [
    "MAX_DECIDED_BY_CHARS",
    "MAX_NOTE_CHARS",
    "PendingApproval",
    "check_decision",
    "decision_record",
    "pending_approval",
    "rejection_output",
]

#: Longest ``note``/``reason`` of a decision, in characters.
MAX_NOTE_CHARS = 2_000
#: Longest ``decided_by``, in characters.
MAX_DECIDED_BY_CHARS = 200


@dataclass(frozen=True)
class PendingApproval:
    """A tool call waiting for a person's decision.

    Attributes:
        task_id: The task that waits.
        tool: The tool the model asked for.
        arguments: The arguments it gave (as sent, when they were not a JSON object).
        reasoning: The model's text in that turn, if it wrote any.
        since: When the task started waiting.
        seq: The call's step in the task's step ledger.
        call_id: The model's id for the call.
        title: The task's title.
        organization_id: The task's organization.
        agent_id: The task's agent.
    """

    task_id: str
    tool: str
    arguments: Any
    reasoning: str | None
    since: datetime | None
    seq: int
    call_id: str | None = None
    title: str = ""
    organization_id: str = ""
    agent_id: str = ""
    #: The step's approval record so far (``requested_at``).
    approval: Mapping[str, Any] = field(default_factory=dict)


def pending_approval(task: Task, step: Step | None) -> PendingApproval | None:
    """What ``task`` waits for (``step``: its step awaiting approval), or None when it waits for nothing."""
    if step is None or step.status != StepStatus.AWAITING_APPROVAL:
        return None
    recorded = step.input or {}
    reasoning = recorded.get("reasoning")
    return PendingApproval(
        task_id=task.id,
        tool=step.name,
        arguments=recorded.get("arguments"),
        reasoning=reasoning if isinstance(reasoning, str) else None,
        since=task.approval_requested_at or step.started_at,
        seq=step.seq,
        call_id=recorded.get("call_id"),
        title=task.title,
        organization_id=task.organization_id,
        agent_id=task.agent_id,
        approval=dict(step.approval or {}),
    )


def from_request(request: ApprovalRequest) -> PendingApproval | None:
    """:func:`pending_approval` of a listed wait."""
    return pending_approval(request.task, request.step)


def _text(name: str, value: object, limit: int, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        what = "a non-empty string" if required else "a string or None"
        raise InvalidArgument(f"{name} {short_repr(value)} must be {what}")
    if len(value) > limit:
        raise InvalidArgument(f"{name} {short_repr(value)} is longer than {limit} characters")
    if "\x00" in value:
        raise InvalidArgument(f"{name} {short_repr(value)} contains a NUL character")
    return value


def check_decision(
    *, decided_by: object, note: object = None, reason: object = None, rejecting: bool = False
) -> tuple[str | None, str | None]:
    """``(decided_by, note or reason)`` checked: strings within their limits; a rejection needs a reason.

    Raises:
        InvalidArgument: Naming the bad value.
    """
    by = _text("decided_by", decided_by, MAX_DECIDED_BY_CHARS, required=False)
    if rejecting:
        return by, _text("reason", reason, MAX_NOTE_CHARS, required=True)
    return by, _text("note", note, MAX_NOTE_CHARS, required=False)


def decision_record(
    approved: bool, decided_by: str | None, note: str | None, now: datetime
) -> dict[str, Any]:
    """The decision merged into the waiting step's approval (absent values left out)."""
    record: dict[str, Any] = {
        "decision": APPROVED if approved else REJECTED,
        "decided_at": approval_time(now),
    }
    if decided_by is not None:
        record["decided_by"] = decided_by
    if note is not None:
        record["note"] = note
    return record


def rejection_output(reason: str) -> dict[str, Any]:
    """The rejected step's output: the tool result the model is given."""
    return {"content": rejection_result(reason), "is_error": True}
