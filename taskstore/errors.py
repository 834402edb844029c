"""Errors raised by task stores. Messages name the offending value."""

from __future__ import annotations

from config.errors import AgentQueueError, short_repr


class TaskStoreError(AgentQueueError):
    """A task store could not do what was asked."""


class InvalidTaskId(TaskStoreError, ValueError):
    """A task or agent id that is not a UUID."""

    def __init__(self, value: object, what: str = "task id") -> None:
        super().__init__(f"{what} {short_repr(value)} is not a UUID")
        self.value = value


class TaskNotFound(TaskStoreError, LookupError):
    """No task has this id."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} does not exist")
        self.task_id = task_id


class AgentNotFound(TaskStoreError, LookupError):
    """No agent has this id."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} does not exist")
        self.agent_id = agent_id


class SchemaMissing(TaskStoreError):
    """The database lacks a migration (tables or ``agentq_*`` functions); the message says what to apply."""


class DuplicateTask(TaskStoreError):
    """An insert whose task id already exists (or is given twice); nothing was inserted."""


class InvalidTransition(TaskStoreError):
    """A status change that the task's current status does not allow."""

    def __init__(self, task_id: str, from_status: str, to_status: str, hint: str = "") -> None:
        message = f"task {task_id!r} is {from_status}; it cannot become {to_status}"
        super().__init__(f"{message} ({hint})" if hint else message)
        self.task_id = task_id
        self.from_status = from_status
        self.to_status = to_status


class StoreUnavailable(TaskStoreError):
    """The database could not be reached or refused the statement."""
