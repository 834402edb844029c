"""Errors raised by the queue's public entry points. Each names the bad value."""

from __future__ import annotations

from config.errors import AgentQueueError, short_repr
from taskstore.errors import InvalidTransition


class InvalidArgument(AgentQueueError, ValueError):
    """An argument of a public entry point is out of range or of the wrong type."""


class InvalidPriority(InvalidArgument):
    """Priority must be an int from 0 to 10."""

    def __init__(self, value: object) -> None:
        super().__init__(f"priority {short_repr(value)} is not an int from 0 to 10 (higher = more urgent)")
        self.value = value


class InvalidDelay(InvalidArgument):
    """Delay must be a non-negative int of milliseconds, at most 7 days."""

    def __init__(self, value: object) -> None:
        super().__init__(
            f"delay_ms {short_repr(value)} is not an int of milliseconds from 0 to 604800000 (7 days)"
        )
        self.value = value


class InvalidContext(InvalidArgument):
    """Context must be a JSON object within the size bound."""


class AgentInactive(AgentQueueError):
    """The task's agent exists but is switched off (``is_active = false``)."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} is inactive")
        self.agent_id = agent_id


class AgentChangedConcurrently(AgentQueueError):
    """The task's agent changed between ``create_task``'s insert and its check; nothing was inserted."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(
            f"agent {agent_id!r} changed while the task was being created; nothing inserted, try again"
        )
        self.agent_id = agent_id


class AgentOrganizationMismatch(AgentQueueError):
    """A task may only use an agent of its own organization."""

    def __init__(self, agent_id: str, organization_id: str) -> None:
        super().__init__(f"agent {agent_id!r} does not belong to organization {organization_id!r}")


class UnknownAgentKind(AgentQueueError):
    """No actor is declared for the agent's ``kind``."""

    def __init__(self, kind: str, known: list[str]) -> None:
        super().__init__(f"agent kind {kind!r} has no actor (known kinds: {', '.join(known) or 'none'})")
        self.kind = kind


class BrokerUnavailable(AgentQueueError):
    """Redis refused or could not take the message; the task was left ``pending``."""


class AgentUnavailable(AgentQueueError):
    """Inside a worker: the task's agent vanished or was deactivated. Not retryable."""

    retryable = False


class NotAwaitingApproval(InvalidTransition):
    """``approve``/``reject`` of a task that waits for no decision: it never asked for one, or another
    decision was taken first (of two decisions at once, one wins). Nothing changed."""

    def __init__(self, task_id: str, status: str) -> None:
        AgentQueueError.__init__(
            self,
            f"task {task_id!r} is {status}, not awaiting approval: there is no tool call to approve or reject"
            " (it never asked for one, or a decision was taken already)",
        )
        self.task_id = task_id
        self.from_status = status
        self.to_status = "queued"


class ScheduleNotChanged(AgentQueueError):
    """A schedule change that the schedule's current state does not allow (e.g. disabling a disabled one)."""

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__(f"task {task_id!r}: {reason}")
        self.task_id = task_id
