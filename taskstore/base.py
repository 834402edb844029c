"""The :class:`TaskStore` protocol: persistence for agents, tasks, runs and the step ledger.

The database is the source of truth (docs/architecture.md, *The status machine*).
Every status change is a
compare-and-set on the current status (and, for a running task, on its current
run): a method that loses the race changes nothing and returns ``None``/``False``,
so duplicate messages can never run a task twice at once or re-run a finished one.

All timestamps are timezone-aware UTC ``datetime`` values passed in by the caller
(``now``), so the rules are testable with a controlled clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from taskstore.errors import InvalidTaskId
from taskstore.models import (
    Agent,
    ApprovalRequest,
    Claim,
    CleanupResult,
    DueSchedule,
    FiredSchedule,
    Firing,
    NewAgent,
    NewTask,
    Overview,
    QueueCounts,
    QueuedTask,
    RetentionPolicy,
    Run,
    StalledTask,
    Step,
    StepKind,
    StepRecord,
    StepStatus,
    Task,
    TaskFilter,
    TaskKey,
    TaskSummary,
    Usage,
    WaitingTask,
)


@runtime_checkable
class TaskStore(Protocol):
    """Persistence for agents, tasks and runs. Implementations are thread-safe."""

    def migrate(self) -> list[str]:
        """Create or upgrade the schema; returns the names of migrations applied now. Idempotent."""
        ...

    def ensure_schema(self) -> None:
        """Before a worker starts: make sure the schema is current. SQLite (embedded: the worker owns the
        file) applies what is missing; Postgres and Supabase only check (DDL is a deploy step) and raise
        :class:`~taskstore.errors.SchemaMissing` naming what to apply."""
        ...

    def close(self) -> None:
        """Release connections. The store reopens them if used again."""
        ...

    def reserve_connections(self, count: int) -> None:
        """Make room for ``count`` threads using the store at once (a worker passes its thread count)."""
        ...

    def create_agent(self, agent: NewAgent, *, now: datetime) -> Agent:
        """Insert an agent."""
        ...

    def get_agent(self, agent_id: str) -> Agent | None:
        """The agent, or ``None``."""
        ...

    def create_task(self, task: NewTask, *, now: datetime) -> Task:
        """Insert a task in status ``pending``."""
        ...

    def get_task(self, task_id: str) -> Task | None:
        """The task, or ``None``."""
        ...

    def create_runnable_task(self, task: NewTask, *, kinds: Collection[str], now: datetime) -> Task | None:
        """Insert a ``pending`` task only if its agent exists, is active, belongs to the task's organization
        and has one of ``kinds``: one statement. ``None`` (nothing inserted) otherwise; the caller reads why.
        """
        ...

    def create_tasks(self, tasks: Sequence[NewTask], *, now: datetime) -> list[Task]:
        """Insert tasks in status ``pending``, all or none (one transaction); returned in the given order."""
        ...

    def get_tasks(self, task_ids: Sequence[str]) -> list[Task]:
        """The tasks among ``task_ids`` that exist, in the order of ``task_ids``."""
        ...

    def get_runs(self, task_id: str) -> list[Run]:
        """The task's runs, oldest attempt first."""
        ...

    def mark_queued(
        self, task_id: str, *, priority: int | None, run_at: datetime, now: datetime
    ) -> Task | None:
        """``pending → queued``; ``priority`` None keeps the row's. ``None`` if the task was not pending."""
        ...

    def revert_queued(self, task_id: str, *, queued_at: datetime, now: datetime) -> bool:
        """``queued → pending`` for the enqueue made at ``queued_at``, when the broker refused its message."""
        ...

    def queue_runnable_task(
        self,
        task_id: str,
        *,
        kinds: Collection[str],
        priority: int | None,
        run_at: datetime,
        now: datetime,
    ) -> QueuedTask | None:
        """``pending → queued`` only if the task's agent exists, is active and has one of ``kinds``: one
        statement that also returns the agent's kind. ``None`` (nothing changed) otherwise."""
        ...

    def queue_runnable_tasks(
        self,
        task_ids: Sequence[str],
        *,
        kinds: Collection[str],
        priority: int | None,
        run_at: datetime,
        now: datetime,
    ) -> list[QueuedTask] | None:
        """The bulk :meth:`queue_runnable_task`: every one of the distinct ``task_ids`` (in that order), or
        none (``None``, nothing changed) if any is missing, not pending or its agent cannot run it."""
        ...

    def mark_queued_many(
        self, task_ids: Sequence[str], *, priority: int | None, run_at: datetime, now: datetime
    ) -> list[Task] | None:
        """``pending → queued`` for every one of the distinct ``task_ids`` at once, or for none: ``None`` (and
        nothing changed) if any of them is missing or not pending. Returned in the order of ``task_ids``."""
        ...

    def revert_queued_many(self, task_ids: Sequence[str], *, queued_at: datetime, now: datetime) -> int:
        """:meth:`revert_queued` for many tasks in one call; returns how many went back to ``pending``."""
        ...

    def claim(
        self,
        task_id: str,
        *,
        run_id: str,
        worker_id: str,
        lease_until: datetime,
        now: datetime,
        max_running_in_org: int | None = None,
    ) -> Claim | None:
        """``queued → running``: counts an attempt, inserts run ``run_id`` and leases the task to
        ``worker_id`` until ``lease_until``. ``None`` if the task was not queued, or if its organization
        already runs ``max_running_in_org`` tasks (checked atomically with the claim)."""
        ...

    def renew_leases(
        self, held: Sequence[tuple[str, str]], *, lease_until: datetime, now: datetime
    ) -> list[str]:
        """Extend the leases of the attempts a worker holds, given as ``(task_id, run_id)`` pairs: only a
        task still ``running`` under that run is renewed. Returns the ids of the tasks renewed; a task
        left out was lost (recovered as stalled, finished or claimed by another run)."""
        ...

    def recover_stalled(
        self, *, max_stalled_count: int, now: datetime, limit: int = 100
    ) -> list[StalledTask]:
        """Running tasks whose lease expired: ``running → queued`` (the attempt is not counted), or
        ``failed`` once ``stalled_count`` would exceed ``max_stalled_count``. Their runs end ``stalled``."""
        ...

    def postpone(
        self,
        task_id: str,
        run_id: str,
        *,
        reason: str,
        run_at: datetime,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        """``running → queued`` until ``run_at`` without consuming the attempt (``postponed_count`` grows)."""
        ...

    def find_pending(self, *, created_before: datetime, limit: int = 500) -> list[WaitingTask]:
        """Ad-hoc tasks still ``pending`` that were created before ``created_before``, oldest first."""
        ...

    def find_queued(self, *, queued_before: datetime, limit: int = 1000) -> list[WaitingTask]:
        """Tasks ``queued`` since before ``queued_before``, oldest first."""
        ...

    def touch_queued(self, task_id: str, *, queued_at: datetime, now: datetime) -> bool:
        """Compare-and-set ``queued_at`` from ``queued_at`` to ``now``: the winner re-sends the message."""
        ...

    def fail_unrunnable(
        self, task_id: str, *, error: str, now: datetime, idle_too: bool = False
    ) -> Task | None:
        """``pending/queued → failed`` with ``error``, for a task nothing can run (its agent is gone, its
        kind has no actor, its schedule is unusable): no run, no attempt used. ``idle_too`` also fails a
        ``completed`` or ``failed`` one (a schedule between firings). ``None`` if in another status."""
        ...

    def list_failed(self, *, limit: int = 100, offset: int = 0) -> list[Task]:
        """Dead-lettered tasks (``failed``, not archived), most recently failed first."""
        ...

    def complete(
        self,
        task_id: str,
        run_id: str,
        *,
        result: dict[str, Any],
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
        step: StepRecord | None = None,
    ) -> bool:
        """``running → completed`` for run ``run_id``; ``False`` if that run no longer holds the task.

        ``step``: the run's last step (its final answer), recorded as :meth:`record_step` would, in the same
        transaction."""
        ...

    def fail_attempt(
        self,
        task_id: str,
        run_id: str,
        *,
        error: str,
        stacktrace: str | None,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        retry_at: datetime | None,
        now: datetime,
    ) -> bool:
        """Record run ``run_id`` as failed: ``running → queued`` (due at ``retry_at``) or, when ``retry_at``
        is ``None``, ``running → failed``. ``False`` if that run no longer holds the task."""
        ...

    def request_cancel(self, task_id: str, *, now: datetime) -> Task | None:
        """Ask a ``running`` task to stop; it ends ``cancelled`` at its next step. ``None`` if not running."""
        ...

    def cancel_requested(self, task_id: str) -> bool:
        """Whether a stop was asked for the task (cheap: checked before every model and tool call)."""
        ...

    def finish_cancelled(
        self,
        task_id: str,
        run_id: str,
        *,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        """``running → cancelled`` for run ``run_id`` (which ends ``cancelled``)."""
        ...

    def organization_spend(self, organization_id: str, *, since: datetime) -> Decimal:
        """USD spent on the organization's runs started since ``since`` (runs of unknown price count 0)."""
        ...

    def set_schedule(
        self, task_id: str, *, cron: str, timezone: str, next_run_at: datetime, now: datetime
    ) -> Task | None:
        """Store a ``scheduled`` task's schedule. ``None`` if no such scheduled task exists."""
        ...

    def clear_schedule(self, task_id: str, *, now: datetime) -> Task | None:
        """Remove a task's schedule (no future firings). ``None`` if it had none."""
        ...

    def due_schedules(self, *, now: datetime, limit: int = 1000) -> list[DueSchedule]:
        """Schedules whose ``next_run_at`` is at or before ``now``, earliest first."""
        ...

    def fire_schedules(self, firings: list[Firing], *, now: datetime) -> list[FiredSchedule]:
        """Fire each schedule whose ``next_run_at`` still equals its ``due_at`` (compare-and-set, so two
        schedulers never fire one twice): ``next_run_at`` moves on and, unless the previous run is still
        queued or running, the task is ``queued`` with a fresh set of attempts."""
        ...

    def list_schedules(self, *, limit: int = 100, offset: int = 0) -> list[Task]:
        """Tasks with a schedule, soonest ``next_run_at`` first."""
        ...

    def cancel(self, task_id: str, *, now: datetime) -> Task | None:
        """``pending/queued → cancelled``. ``None`` if the task was in another status."""
        ...

    def requeue_failed(
        self, task_id: str, *, run_at: datetime, now: datetime, resume: bool = False
    ) -> Task | None:
        """``failed → queued`` with a fresh set of attempts. ``None`` if the task was not failed.

        A new firing starts (its steps from 0; the old firing's steps are deleted) unless ``resume``,
        which keeps the firing so the next attempt goes on after its completed steps."""
        ...

    def start_step(
        self,
        task_id: str,
        run_id: str,
        *,
        firing: int,
        seq: int,
        kind: StepKind,
        name: str,
        input: dict[str, Any],
        replaces: str | None,
        now: datetime,
    ) -> bool:
        """Record step ``seq`` of ``firing`` as ``started`` by run ``run_id``. Compare-and-set: ``False``
        (nothing written) unless the task is ``running`` under that run and firing, and the step is new, or
        not completed and last written by this run or by ``replaces`` (the run the caller found it from)."""
        ...

    def finish_step(
        self,
        task_id: str,
        run_id: str,
        *,
        firing: int,
        seq: int,
        status: StepStatus,
        output: dict[str, Any] | None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: Decimal | None = None,
        error: str | None = None,
        now: datetime,
    ) -> bool:
        """Record step ``seq`` as ``completed``/``failed`` with its output (and usage, or error). Compare-and-
        set: ``False`` unless run ``run_id`` started it and still holds the task in that firing. Writing the
        same end again at the same ``now`` is accepted (a re-sent write)."""
        ...

    def record_step(self, task_id: str, run_id: str, step: StepRecord) -> bool:
        """Write a whole step, started and ended, in one go (a model call once it ended). The same compare-
        and-set as :meth:`start_step` (``step.replaces`` as its ``replaces``); the same step written again by
        the same run with the same end is accepted (a re-sent write)."""
        ...

    def get_steps(self, task_id: str) -> list[Step]:
        """The steps of the task's current firing, in ``seq`` order (``[]`` for an unknown task)."""
        ...

    def await_step(
        self,
        task_id: str,
        run_id: str,
        *,
        firing: int,
        seq: int,
        name: str,
        input: dict[str, Any],
        approval: dict[str, Any],
        replaces: str | None,
        now: datetime,
    ) -> bool:
        """Record tool step ``seq`` of ``firing`` as ``awaiting_approval`` by run ``run_id`` (``approval``:
        the request). Compare-and-set as :meth:`start_step`: ``False`` (nothing written) unless the task is
        ``running`` under that run and firing and the step is new, or not completed and last written by
        this run or by ``replaces``."""
        ...

    def await_approval(
        self,
        task_id: str,
        run_id: str,
        *,
        reason: str,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        """``running → awaiting_approval`` for run ``run_id``, which ends ``awaiting_approval`` (``reason``
        its note): the attempt is not counted, the lease released, the wait starts at ``now``. ``False`` if
        that run no longer holds the task."""
        ...

    def decide_approval(
        self, task_id: str, *, decision: dict[str, Any], output: dict[str, Any] | None, now: datetime
    ) -> Task | None:
        """``awaiting_approval → queued``; the step that waits gets ``decision`` merged into its approval
        and, for a rejection (``output`` given), ends ``completed`` with ``output``. Compare-and-set:
        ``None`` if the task was not awaiting approval (of two decisions at once, one wins)."""
        ...

    def expire_approval(
        self, task_id: str, *, waiting_before: datetime, error: str, now: datetime
    ) -> Task | None:
        """``awaiting_approval → failed`` with ``error`` for a task waiting since before ``waiting_before``
        (or since an unknown time); the step that waited ends ``failed``. ``None`` if not so."""
        ...

    def list_approvals(
        self, *, limit: int = 100, offset: int = 0, waiting_before: datetime | None = None
    ) -> list[ApprovalRequest]:
        """Tasks ``awaiting_approval`` (since before ``waiting_before``, when given), the longest waiting
        first, each with the step that waits."""
        ...

    def queue_counts(self, *, now: datetime) -> QueueCounts:
        """Counts of waiting, delayed, active, and (not archived) completed and failed tasks."""
        ...

    def cleanup(self, policy: RetentionPolicy, *, now: datetime) -> CleanupResult:
        """Archive finished jobs outside ``policy`` and delete their runs. Task rows are never deleted."""
        ...

    # --- the operator's views and actions (the dashboard) ------------------

    def list_tasks(
        self,
        task_filter: TaskFilter,
        *,
        limit: int,
        after: TaskKey | None = None,
        before: TaskKey | None = None,
    ) -> list[TaskSummary]:
        """Tasks matching ``task_filter``, newest first (``created_at``, then ``id``), archived ones too.

        Keyset paging: with ``after``, the ``limit`` tasks just older than it; with ``before``, the
        ``limit`` tasks just newer than it (still returned newest first); with neither, the newest.
        """
        ...

    def overview(self, *, now: datetime, organization_id: str | None = None, top: int = 20) -> Overview:
        """Counts by status, the last hour's outcomes, queue depth and spend (UTC day and month), of one
        organization or of all; at most ``top`` organizations per ranking."""
        ...

    def disable_schedule(self, task_id: str, *, now: datetime) -> Task | None:
        """Stop a schedule from firing, keeping its cron and time zone (``next_run_at`` becomes NULL).
        ``None`` if the task has no enabled schedule."""
        ...

    def enable_schedule(self, task_id: str, *, next_run_at: datetime, now: datetime) -> Task | None:
        """Let a disabled schedule fire again from ``next_run_at``. ``None`` if the task has no disabled
        schedule."""
        ...

    def fire_schedule_now(self, task_id: str, *, now: datetime) -> Task | None:
        """Fire a schedule out of turn: the task is ``queued`` with a fresh set of attempts, as a firing
        makes it, and ``next_run_at`` stays. ``None`` if the task has no schedule, or its previous run is
        still queued or running."""
        ...


def new_id() -> str:
    """A fresh random UUID as text."""
    return str(uuid.uuid4())


def normalize_id(value: object, what: str = "task id") -> str:
    """``value`` as a canonical UUID string, or :class:`InvalidTaskId` naming it."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise InvalidTaskId(value, what)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidTaskId(value, what) from None


def utcnow() -> datetime:
    """The current time, timezone-aware UTC: the default clock of stores' callers."""
    return datetime.now(UTC)
