"""A task's events rebuilt from the database, for when its stream has expired (or was lost).

From the task row, its runs (``get_runs``) and the step ledger of its current firing (``get_steps``):

* ``queued`` when the current firing was queued (the task's ``queued_at``, or its first run's start
  if that is earlier: ``queued_at`` moves with every re-queue);
* per run of the current firing, oldest first: ``running``; its steps in ``seq`` order
  (``llm_started``/``llm_completed``, ``tool_started``/``tool_completed``; a step still ``started``
  has no end); then how the run ended: ``completed``, ``retrying`` (it failed or stalled and another
  attempt followed or is queued), ``postponed``, ``failed`` or ``cancelled``;
* ``cancelled`` or ``failed`` for a task that ended without a run of its own (removed while waiting,
  or failed because nothing could run it).

The current firing's runs are the ones after the last run that ended the firing before: a completed
or cancelled run, or a failed run followed by a run that started its attempts over (``retry_job``).
Every replayed event carries ``"replayed": true``; its id is made from its time, strictly increasing.
Data follows the same content switch and redaction as live events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from actors.events.model import Event, EventId, id_at, iso
from actors.events.publisher import sanitize
from middleware.events import EventType
from taskstore import Run, RunStatus, Step, StepKind, StepStatus, Task, TaskStatus

__all__ = ["current_firing", "replay"]


_WAITING = (TaskStatus.QUEUED, TaskStatus.RUNNING)


class _Events:
    """Replayed events in order, with strictly increasing ids."""

    def __init__(self, task_id: str, record_content: bool) -> None:
        self.task_id = task_id
        self.record_content = record_content
        self.events: list[Event] = []
        self.last = EventId(0, 0)

    def add(self, type: EventType, at: datetime, data: Mapping[str, Any]) -> None:
        at_id = id_at(at)
        self.last = at_id if at_id > self.last else self.last.next()
        payload = sanitize({**data, "replayed": True}, record_content=self.record_content)
        self.events.append(Event(str(self.last), type.value, self.task_id, iso(at), payload))


def current_firing(runs: Sequence[Run]) -> list[Run]:
    """The runs of the task's current firing, oldest first (see the module docstring)."""
    ordered = sorted(runs, key=lambda run: (run.started_at, run.attempt))
    start = 0
    for index in range(1, len(ordered)):
        before, after = ordered[index - 1], ordered[index]
        if before.status in (RunStatus.COMPLETED, RunStatus.CANCELLED) or (
            before.status == RunStatus.FAILED and after.attempt <= before.attempt
        ):
            start = index
    return ordered[start:]


def replay(
    task: Task, runs: Sequence[Run], steps: Sequence[Step], *, record_content: bool = False
) -> list[Event]:
    """The events of ``task``'s current firing, rebuilt from its row, runs and ledger steps."""
    events = _Events(task.id, record_content)
    firing = current_firing(runs)
    if task.status == TaskStatus.PENDING and not firing:
        return []
    queued_at = task.queued_at or task.updated_at
    if firing:
        queued_at = min(queued_at, firing[0].started_at)
    events.add(EventType.QUEUED, queued_at, {"priority": task.priority})
    by_run: dict[str, list[Step]] = {}
    for step in sorted(steps, key=lambda step: step.seq):
        by_run.setdefault(step.run_id, []).append(step)
    for index, run in enumerate(firing):
        events.add(EventType.RUNNING, run.started_at, {"run_id": run.id, "attempt": run.attempt})
        for step in by_run.pop(run.id, ()):
            _step(events, step)
        _run_end(events, task, run, later=index + 1 < len(firing))
    for orphans in by_run.values():  # steps whose run row is gone (cleaned up)
        for step in orphans:
            _step(events, step)
    _task_end(events, task, firing)
    return events.events


def _step(events: _Events, step: Step) -> None:
    """A ledger step as its live events: the start, and the end unless it is still ``started``."""
    given, got = step.input or {}, step.output or {}
    if step.kind == StepKind.LLM:
        head: dict[str, Any] = {"provider": given.get("provider"), "model": given.get("model", step.name)}
        events.add(EventType.LLM_STARTED, step.started_at, {**head, "seq": step.seq})
        ended: dict[str, Any] = {**head, "seq": step.seq}
        if step.status == StepStatus.COMPLETED:
            calls = got.get("tool_calls") or []
            ended.update(
                model=got.get("model") or head["model"],
                input_tokens=step.input_tokens,
                output_tokens=step.output_tokens,
                cost_usd=None if step.cost_usd is None else str(step.cost_usd),
                finish_reason=got.get("finish_reason"),
                tool_calls=[call.get("name") for call in calls if isinstance(call, Mapping)],
                content=got.get("content"),
            )
        _end(events, EventType.LLM_COMPLETED, step, ended)
        return
    head = {"name": step.name, "call_id": given.get("call_id")}
    if step.approval is not None and _approval(events, step, given) is False:
        return  # rejected (or never decided): the tool did not run
    events.add(
        EventType.TOOL_STARTED,
        step.started_at,
        {**head, "seq": step.seq, "arguments": given.get("arguments")},
    )
    ended = {**head, "seq": step.seq, "is_error": bool(got.get("is_error", step.status == StepStatus.FAILED))}
    if step.status == StepStatus.COMPLETED:
        ended["result"] = got.get("content")
    _end(events, EventType.TOOL_COMPLETED, step, ended)


def _approval(events: _Events, step: Step, given: Mapping[str, Any]) -> bool:
    """A gated tool step's ``approval_requested`` and decision events; whether the tool ran after them."""
    approval = step.approval or {}
    requested = _time(approval.get("requested_at")) or step.started_at
    events.add(
        EventType.APPROVAL_REQUESTED,
        requested,
        {"tool": step.name, "seq": step.seq, "arguments": given.get("arguments")},
    )
    decision = approval.get("decision")
    decided = _time(approval.get("decided_at")) or requested
    who = approval.get("decided_by")
    if decision == "approved":
        events.add(EventType.APPROVED, decided, {"decided_by": who, "note": approval.get("note")})
        return step.status != StepStatus.AWAITING_APPROVAL
    if decision == "rejected":
        events.add(EventType.REJECTED, decided, {"decided_by": who, "reason": approval.get("note")})
    return False


def _time(value: object) -> datetime | None:
    """An approval's ISO timestamp, or None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _end(events: _Events, type: EventType, step: Step, data: dict[str, Any]) -> None:
    """The end event of a finished step (with its latency, and its error if it failed)."""
    if step.status == StepStatus.STARTED or step.finished_at is None:
        return
    data["latency_ms"] = max(0, round((step.finished_at - step.started_at).total_seconds() * 1000))
    if step.status == StepStatus.FAILED:
        data["error"] = step.error
    events.add(type, step.finished_at, data)


def _run_end(events: _Events, task: Task, run: Run, *, later: bool) -> None:
    at = run.finished_at
    if at is None or run.status == RunStatus.RUNNING:
        return
    base = {"run_id": run.id, "attempt": run.attempt}
    again = later or task.status in _WAITING
    if run.status == RunStatus.COMPLETED:
        data: dict[str, Any] = {
            **base,
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "cost_usd": None if run.cost_usd is None else str(run.cost_usd),
        }
        if not later and task.result is not None:
            data["output"] = task.result.get("output")
        events.add(EventType.COMPLETED, at, data)
    elif run.status == RunStatus.POSTPONED:
        events.add(EventType.POSTPONED, at, {**base, "reason": run.error})
    elif run.status == RunStatus.CANCELLED:
        events.add(EventType.CANCELLED, at, base)
    elif run.status == RunStatus.STALLED:
        if again:
            events.add(EventType.RETRYING, at, {**base, "reason": "stalled", "error": run.error})
        else:
            events.add(EventType.FAILED, at, {**base, "error": task.error or run.error})
    elif again:
        events.add(EventType.RETRYING, at, {**base, "error": run.error})
    else:
        events.add(EventType.FAILED, at, {**base, "error": run.error})


def _task_end(events: _Events, task: Task, firing: Sequence[Run]) -> None:
    """A terminal event for a task that ended without a run saying so (removed while waiting, or failed
    because nothing could run it)."""
    last = firing[-1].status if firing else None
    if task.status == TaskStatus.CANCELLED and last != RunStatus.CANCELLED:
        events.add(EventType.CANCELLED, task.updated_at, {})
    elif task.status == TaskStatus.FAILED and last not in (RunStatus.FAILED, RunStatus.STALLED):
        events.add(EventType.FAILED, task.failed_at or task.updated_at, {"error": task.error})
