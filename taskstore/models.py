"""Records stored by a :class:`~taskstore.base.TaskStore`: agents, tasks, runs and steps."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


class TaskStatus(enum.StrEnum):
    """Where a task is in its lifecycle (docs/architecture.md, *The status machine*)."""

    #: Row created, not handed to the queue yet.
    PENDING = "pending"
    #: A message is on the broker (possibly delayed until ``run_at``).
    QUEUED = "queued"
    #: A worker holds the task and is running an attempt.
    RUNNING = "running"
    #: Finished with a result.
    COMPLETED = "completed"
    #: Attempts exhausted or non-retryable error: the dead-letter state.
    FAILED = "failed"
    #: Removed before it finished.
    CANCELLED = "cancelled"
    #: Waits for a person to approve or reject a tool call; holds no worker and uses no attempt.
    AWAITING_APPROVAL = "awaiting_approval"


class RunStatus(enum.StrEnum):
    """Outcome of one attempt."""

    #: Stopped on request (``remove_job`` of a running task); the task is ``cancelled``.
    CANCELLED = "cancelled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    #: Ended without consuming an attempt (rate limit, provider Retry-After); the task was re-queued.
    POSTPONED = "postponed"
    #: The worker stopped renewing its lease (crash, kill, cut off at shutdown).
    STALLED = "stalled"
    #: Ended at a tool call that waits for a person's approval; the attempt was not counted.
    AWAITING_APPROVAL = "awaiting_approval"


class StepKind(enum.StrEnum):
    """What a step of the step ledger is."""

    #: A model call; the step's ``name`` is the model.
    LLM = "llm"
    #: A tool call; the step's ``name`` is the tool.
    TOOL = "tool"


class StepStatus(enum.StrEnum):
    """Where a step is: written ``started`` before its call, ``completed`` or ``failed`` after it."""

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    #: A tool call waiting for a person's decision (``Step.approval``); it has not run.
    AWAITING_APPROVAL = "awaiting_approval"


TASK_TYPES = ("adhoc", "scheduled")


@dataclass(frozen=True, slots=True)
class Agent:
    """A row of ``ai_agents``: how to run an agent, and which actor (``kind``) runs it."""

    id: str
    organization_id: str
    name: str
    kind: str
    provider: str
    model: str
    system_prompt: str | None
    allowed_tools: tuple[str, ...]
    temperature: float | None
    max_tokens: int | None
    max_turns: int
    is_active: bool
    created_at: datetime
    updated_at: datetime
    base_url: str | None = None
    tool_timeout_s: float = 30.0
    run_time_limit_s: float | None = None
    fallback_provider: str | None = None
    fallback_model: str | None = None
    #: Stream the model's output as ``llm_delta`` events while it is generated.
    stream: bool = False
    #: Tools whose calls wait for a person's approval before they run.
    approval_tools: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Task:
    """A row of ``ai_agent_tasks``."""

    id: str
    agent_id: str
    organization_id: str
    title: str
    description: str | None
    task_type: str
    context: dict[str, Any]
    status: TaskStatus
    priority: int
    schedule_cron: str | None
    schedule_timezone: str | None
    next_run_at: datetime | None
    last_run_at: datetime | None
    max_attempts: int
    attempts: int
    stalled_count: int
    result: dict[str, Any] | None
    error: str | None
    run_at: datetime | None
    current_run_id: str | None
    worker_id: str | None
    lease_expires_at: datetime | None
    postponed_count: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    cancel_requested_at: datetime | None
    queued_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    archived_at: datetime | None
    created_at: datetime
    updated_at: datetime
    #: The current firing (see :class:`Step`): + 1 when a schedule fires or ``retry_job`` starts afresh.
    firing: int = 0
    #: When the task started waiting in ``awaiting_approval`` (None in every other status).
    approval_requested_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """A row of ``ai_agent_task_runs``: one attempt of a task."""

    id: str
    task_id: str
    attempt: int
    status: RunStatus
    worker_id: str | None
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    stacktrace: str | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal | None
    transcript: list[dict[str, Any]] | None
    trace_id: str | None


@dataclass(frozen=True, slots=True)
class Step:
    """A row of ``ai_agent_task_steps``: one model call or tool call of a task's firing.

    ``seq`` numbers the steps of one firing from 0. A step is written ``started`` before its call and
    ``completed`` (with its output, and a model call's tokens and cost) or ``failed`` after it, by the
    run that holds the task (``run_id``); a later attempt at the same firing continues after the
    completed steps and takes over one left unfinished.
    """

    id: str
    task_id: str
    run_id: str
    firing: int
    seq: int
    kind: StepKind
    name: str
    status: StepStatus
    input: dict[str, Any] | None
    output: dict[str, Any] | None
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    #: A tool step's approval, for a tool that needed one: ``requested_at``, then the ``decision``
    #: (``approved``, ``rejected``, ``timed_out``, ``cancelled``) with ``decided_by``, ``decided_at`` and
    #: ``note``; None for every other step.
    approval: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A task waiting in ``awaiting_approval``, with the step (the tool call) it waits for.

    ``step`` is None only for a row left inconsistent by hand (no step waits); the wait still times out.
    """

    task: Task
    step: Step | None


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A whole step written in one go, started and ended (``TaskStore.record_step``, or with the run's
    completion, ``TaskStore.complete(step=…)``): how a model call is recorded once it has ended.

    ``replaces``: the run that last wrote this step as the writer found it (``None``: no row), as for
    :meth:`~taskstore.base.TaskStore.start_step`.
    """

    firing: int
    seq: int
    kind: StepKind
    name: str
    input: dict[str, Any]
    started_at: datetime
    status: StepStatus
    output: dict[str, Any] | None
    finished_at: datetime
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal | None = None
    error: str | None = None
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker gets when it wins a task: the task (now running), its agent, its new run, and the
    steps earlier attempts at the task's current firing recorded (read in the same statement)."""

    task: Task
    agent: Agent | None
    run_id: str
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True, slots=True)
class QueuedTask:
    """A task just moved ``pending → queued``, with its agent's kind (whose actor gets the message)."""

    task: Task
    agent_kind: str


@dataclass(frozen=True, slots=True)
class StalledTask:
    """A running task whose lease expired, as recovered: re-queued, or failed past the stalled limit."""

    task_id: str
    kind: str | None
    requeued: bool
    stalled_count: int
    attempts: int


@dataclass(frozen=True, slots=True)
class WaitingTask:
    """A pending or queued task found by reconciliation, with the agent kind that runs it."""

    task_id: str
    kind: str | None
    #: ``queued_at`` for a queued task, ``created_at`` for a pending one.
    since: datetime


@dataclass(frozen=True, slots=True)
class DueSchedule:
    """A scheduled task whose ``next_run_at`` has come."""

    task_id: str
    cron: str
    timezone: str
    next_run_at: datetime


@dataclass(frozen=True, slots=True)
class Firing:
    """Fire schedule ``task_id`` if its ``next_run_at`` is still ``due_at``; move it to ``next_run_at``."""

    task_id: str
    due_at: datetime
    next_run_at: datetime


@dataclass(frozen=True, slots=True)
class FiredSchedule:
    """A firing that won its compare-and-set: ``started`` (queued a run), or skipped because the
    previous run was still queued or running (only ``next_run_at`` moved)."""

    task_id: str
    kind: str | None
    started: bool
    priority: int
    organization_id: str


@dataclass(frozen=True, slots=True)
class NewAgent:
    """Fields for creating an agent; the store fills in ids and timestamps."""

    organization_id: str
    name: str
    provider: str = "openai"
    model: str = "gpt-4o-mini"
    kind: str = "general"
    system_prompt: str | None = None
    allowed_tools: tuple[str, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    max_turns: int = 10
    is_active: bool = True
    base_url: str | None = None
    tool_timeout_s: float = 30.0
    run_time_limit_s: float | None = None
    fallback_provider: str | None = None
    fallback_model: str | None = None
    stream: bool = False
    approval_tools: tuple[str, ...] = ()
    id: str | None = None


@dataclass(frozen=True, slots=True)
class NewTask:
    """Fields for creating a task; the store fills in ids, status and timestamps."""

    agent_id: str
    organization_id: str
    title: str
    description: str | None = None
    task_type: str = "adhoc"
    context: dict[str, Any] = field(default_factory=dict)
    priority: int = 5
    max_attempts: int = 3
    schedule_timezone: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and cost of one attempt (``cost_usd`` None: a model's price is unknown)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Task counts by queue state, read in one consistent query."""

    waiting: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0
    delayed: int = 0
    #: Tasks waiting for a person's approval of a tool call.
    awaiting_approval: int = 0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long finished jobs stay visible to the queue (docs/architecture.md, *Queue semantics*)."""

    completed_age_s: int = 86_400
    completed_count: int = 1000
    failed_age_s: int = 604_800
    failed_count: int = 5000


@dataclass(frozen=True, slots=True)
class CleanupResult:
    """What a cleanup pass archived and deleted."""

    archived_completed: int = 0
    archived_failed: int = 0
    deleted_runs: int = 0
    deleted_steps: int = 0


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks a listing shows (``None``: any); every filter given must match."""

    status: TaskStatus | None = None
    agent_id: str | None = None
    organization_id: str | None = None
    #: The agent's ``kind``.
    kind: str | None = None
    #: ``created_at`` at or after this moment.
    created_from: datetime | None = None
    #: ``created_at`` before this moment.
    created_to: datetime | None = None
    #: Text the title contains, case-insensitively (for ASCII letters on SQLite).
    title: str | None = None


@dataclass(frozen=True, slots=True)
class TaskKey:
    """A task's place in a listing (newest ``created_at`` first, then highest ``id``): a page boundary."""

    created_at: datetime
    id: str


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One line of a task listing: the task's columns that fit on a line, with its agent's name and kind."""

    id: str
    title: str
    status: TaskStatus
    priority: int
    task_type: str
    agent_id: str
    organization_id: str
    #: ``None`` when the agent row is gone.
    agent_name: str | None
    kind: str | None
    attempts: int
    max_attempts: int
    #: The first :data:`SUMMARY_ERROR_CHARS` characters of the task's error.
    error: str | None
    cost_usd: Decimal
    schedule_cron: str | None
    next_run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    archived_at: datetime | None

    @property
    def key(self) -> TaskKey:
        """This task's place in a listing."""
        return TaskKey(self.created_at, self.id)


#: Characters of a task's error a :class:`TaskSummary` carries.
SUMMARY_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class MinuteCount:
    """Tasks that finished in one minute (UTC), by outcome."""

    minute: datetime
    completed: int
    failed: int


@dataclass(frozen=True, slots=True)
class OrganizationSpend:
    """USD an organization's runs started since midnight and since the first of the month cost (UTC)."""

    organization_id: str
    today: Decimal
    month: Decimal


@dataclass(frozen=True, slots=True)
class Overview:
    """The state of the queue at a glance, read in one call (see :meth:`TaskStore.overview`)."""

    #: Tasks by status (every status present; completed and failed ones not archived), plus the queued
    #: ones split into ``waiting`` (due) and ``delayed``.
    counts: dict[str, int]
    #: Tasks that completed / failed in the last hour.
    completed_last_hour: int
    failed_last_hour: int
    #: The last hour minute by minute, oldest first; minutes without a finished task are left out.
    per_minute: tuple[MinuteCount, ...]
    #: Queued tasks (waiting and delayed) by priority.
    depth_by_priority: dict[int, int]
    #: Queued tasks by organization, the deepest first.
    depth_by_organization: tuple[tuple[str, int], ...]
    #: Spend per organization, the largest this month first.
    spend: tuple[OrganizationSpend, ...]
