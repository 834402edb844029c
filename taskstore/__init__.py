"""Persistence for agents, tasks and runs: the protocol, its implementations and the schema."""

from __future__ import annotations

from taskstore.base import TaskStore, new_id, normalize_id, utcnow
from taskstore.errors import (
    AgentNotFound,
    DuplicateTask,
    InvalidTaskId,
    InvalidTransition,
    SchemaMissing,
    StoreUnavailable,
    TaskNotFound,
    TaskStoreError,
)
from taskstore.factory import build_store
from taskstore.memory import InMemoryTaskStore
from taskstore.models import (
    Agent,
    Claim,
    CleanupResult,
    DueSchedule,
    FiredSchedule,
    Firing,
    NewAgent,
    NewTask,
    QueueCounts,
    QueuedTask,
    RetentionPolicy,
    Run,
    RunStatus,
    StalledTask,
    Task,
    TaskStatus,
    Usage,
    WaitingTask,
)

__all__ = [
    "Agent",
    "AgentNotFound",
    "Claim",
    "CleanupResult",
    "DueSchedule",
    "DuplicateTask",
    "FiredSchedule",
    "Firing",
    "InMemoryTaskStore",
    "InvalidTaskId",
    "InvalidTransition",
    "NewAgent",
    "NewTask",
    "QueueCounts",
    "QueuedTask",
    "RetentionPolicy",
    "Run",
    "RunStatus",
    "SchemaMissing",
    "StalledTask",
    "StoreUnavailable",
    "Task",
    "TaskNotFound",
    "TaskStatus",
    "TaskStore",
    "TaskStoreError",
    "Usage",
    "WaitingTask",
    "build_store",
    "new_id",
    "normalize_id",
    "utcnow",
]
