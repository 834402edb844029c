"""The data of the lifecycle events (``middleware.events``): what each transition tells its followers.

Built here, published by ``TaskLifecycle`` (and ``AgentTaskQueue`` for ``queued``) through its
:class:`~middleware.events.EventSink`.
"""

from __future__ import annotations

from typing import Any

from middleware.events import EventType
from middleware.failure_policy import Decision, Outcome, postpone_cause
from middleware.outcome import AttemptResult
from taskstore import Claim, Task

__all__ = ["attempt_end_event", "completed_event", "decision_event", "queued_event", "running_event"]


def queued_event(task: Task, delay_ms: int, by: str) -> dict[str, Any]:
    """``queued``: the priority, the delay and who queued the task (``add_task``, ``send`` …)."""
    return {"priority": task.priority, "delay_ms": delay_ms, "by": by}


def running_event(claim: Claim, worker: str) -> dict[str, Any]:
    """``running``: the run (attempt) that starts and the worker running it."""
    return {"run_id": claim.run_id, "attempt": claim.task.attempts, "worker": worker}


def completed_event(claim: Claim, outcome: AttemptResult) -> dict[str, Any]:
    """``completed``: the attempt, its tokens and cost, the turns, the model and the output (content)."""
    usage = outcome.usage
    return {
        "run_id": claim.run_id,
        "attempt": claim.task.attempts,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": None if usage.cost_usd is None else str(usage.cost_usd),
        **{key: outcome[key] for key in ("output", "turns", "model") if key in outcome},
    }


def attempt_end_event(
    claim: Claim, decision: Decision, error: str, exception: BaseException | None = None
) -> tuple[EventType, dict[str, Any]]:
    """The event of an attempt that ended without a result, as ``decision`` recorded it: ``cancelled``,
    ``approval_requested`` (``tool``, ``seq`` and, with content on, ``arguments``), ``postponed``
    (``delay_ms``, ``reason``, ``cause``: ``provider_429``, ``rpm``, ``org_tpm`` …), ``retrying``
    (``delay_ms``, ``error``, ``next_attempt``) or ``failed``."""
    attempt = claim.task.attempts
    base: dict[str, Any] = {"run_id": claim.run_id, "attempt": attempt}
    if decision.outcome is Outcome.CANCEL:
        return EventType.CANCELLED, base
    if decision.outcome is Outcome.AWAIT_APPROVAL:
        waiting = {
            key: getattr(exception, key) for key in ("tool", "seq", "arguments") if hasattr(exception, key)
        }
        return EventType.APPROVAL_REQUESTED, {**base, **waiting}
    if decision.outcome is Outcome.POSTPONE:
        cause = postpone_cause(exception)
        return EventType.POSTPONED, {**base, "delay_ms": decision.delay_ms, "reason": error, "cause": cause}
    if decision.outcome is Outcome.RETRY:
        data = {**base, "delay_ms": decision.delay_ms, "error": error, "next_attempt": attempt + 1}
        return EventType.RETRYING, data
    return EventType.FAILED, {**base, "error": error}


def decision_event(
    approved: bool, decided_by: str | None, text: str | None
) -> tuple[EventType, dict[str, Any]]:
    """``approved`` (``note``) or ``rejected`` (``reason``), with who decided."""
    if approved:
        return EventType.APPROVED, {"decided_by": decided_by, "note": text}
    return EventType.REJECTED, {"decided_by": decided_by, "reason": text}
