"""An in-memory :class:`~taskstore.base.TaskStore` for unit tests.

It follows the same rules as the SQL stores (the conformance suite runs against
all of them) and keeps its state inspectable: ``agents``, ``tasks``, ``runs``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from taskstore.base import new_id
from taskstore.errors import DuplicateTask
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
    RetentionPolicy,
    Run,
    RunStatus,
    StalledTask,
    Task,
    TaskStatus,
    Usage,
    WaitingTask,
)
from taskstore.rules import STALLED_ERROR, STALLED_LIMIT_ERROR, unrunnable_statuses
from taskstore.storable import storable_json, storable_text


class InMemoryTaskStore:
    """A thread-safe, process-local task store."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.agents: dict[str, Agent] = {}
        self.tasks: dict[str, Task] = {}
        self.runs: dict[str, Run] = {}

    def migrate(self) -> list[str]:
        return []

    def close(self) -> None:
        return None

    def reserve_connections(self, count: int) -> None:
        return None

    def reset(self) -> None:
        """Forget everything."""
        with self._lock:
            self.agents.clear()
            self.tasks.clear()
            self.runs.clear()

    # --- agents and tasks -------------------------------------------------

    def create_agent(self, agent: NewAgent, *, now: datetime) -> Agent:
        record = Agent(
            id=agent.id or new_id(),
            organization_id=agent.organization_id,
            name=agent.name,
            kind=agent.kind,
            provider=agent.provider,
            model=agent.model,
            system_prompt=agent.system_prompt,
            allowed_tools=tuple(agent.allowed_tools),
            temperature=agent.temperature,
            max_tokens=agent.max_tokens,
            max_turns=agent.max_turns,
            is_active=agent.is_active,
            created_at=now,
            updated_at=now,
            base_url=agent.base_url,
            tool_timeout_s=agent.tool_timeout_s,
            run_time_limit_s=agent.run_time_limit_s,
            fallback_provider=agent.fallback_provider,
            fallback_model=agent.fallback_model,
        )
        with self._lock:
            self.agents[record.id] = record
        return record

    def get_agent(self, agent_id: str) -> Agent | None:
        with self._lock:
            return self.agents.get(agent_id)

    def create_task(self, task: NewTask, *, now: datetime) -> Task:
        record = _new_record(task, now)
        with self._lock:
            self.tasks[record.id] = record
        return record

    def create_tasks(self, tasks: Sequence[NewTask], *, now: datetime) -> list[Task]:
        records = [_new_record(task, now) for task in tasks]
        with self._lock:
            if len({record.id for record in records}) < len(records) or any(
                record.id in self.tasks for record in records
            ):
                raise DuplicateTask("a task id is given twice or already exists; nothing was inserted")
            self.tasks.update((record.id, record) for record in records)
        return records

    def get_task(self, task_id: str) -> Task | None:
        with self._lock:
            return self.tasks.get(task_id)

    def get_tasks(self, task_ids: Sequence[str]) -> list[Task]:
        with self._lock:
            return [self.tasks[task_id] for task_id in task_ids if task_id in self.tasks]

    def get_runs(self, task_id: str) -> list[Run]:
        with self._lock:
            return sorted(
                (run for run in self.runs.values() if run.task_id == task_id), key=lambda r: r.attempt
            )

    # --- transitions --------------------------------------------------------

    def _swap(self, task_id: str, expected: set[TaskStatus], **changes: Any) -> Task | None:
        """Compare-and-set: apply ``changes`` if the task's status is in ``expected``."""
        task = self.tasks.get(task_id)
        if task is None or task.status not in expected:
            return None
        updated = replace(task, **changes)
        self.tasks[task_id] = updated
        return updated

    def mark_queued(
        self, task_id: str, *, priority: int | None, run_at: datetime, now: datetime
    ) -> Task | None:
        with self._lock:
            task = self.tasks.get(task_id)
            return self._swap(
                task_id,
                {TaskStatus.PENDING},
                status=TaskStatus.QUEUED,
                priority=priority if priority is not None else (task.priority if task else 5),
                run_at=run_at,
                queued_at=now,
                archived_at=None,
                updated_at=now,
            )

    def revert_queued(self, task_id: str, *, queued_at: datetime, now: datetime) -> bool:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None or task.queued_at != queued_at:
                return False
            return (
                self._swap(
                    task_id,
                    {TaskStatus.QUEUED},
                    status=TaskStatus.PENDING,
                    run_at=None,
                    queued_at=None,
                    updated_at=now,
                )
                is not None
            )

    def mark_queued_many(
        self, task_ids: Sequence[str], *, priority: int | None, run_at: datetime, now: datetime
    ) -> list[Task] | None:
        with self._lock:
            marked: list[Task] = []
            for task_id in task_ids:
                task = self.tasks.get(task_id)
                if task is None or task.status != TaskStatus.PENDING:
                    return None
                marked.append(
                    replace(
                        task,
                        status=TaskStatus.QUEUED,
                        priority=task.priority if priority is None else priority,
                        run_at=run_at,
                        queued_at=now,
                        archived_at=None,
                        updated_at=now,
                    )
                )
            self.tasks.update((task.id, task) for task in marked)
            return marked

    def revert_queued_many(self, task_ids: Sequence[str], *, queued_at: datetime, now: datetime) -> int:
        with self._lock:
            return sum(self.revert_queued(task_id, queued_at=queued_at, now=now) for task_id in task_ids)

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
        with self._lock:
            task = self.tasks.get(task_id)
            if task is not None and max_running_in_org is not None:
                running = sum(
                    1
                    for other in self.tasks.values()
                    if other.organization_id == task.organization_id and other.status == TaskStatus.RUNNING
                )
                if running >= max_running_in_org:
                    return None
            claimed = self._swap(
                task_id,
                {TaskStatus.QUEUED},
                status=TaskStatus.RUNNING,
                attempts=(task.attempts + 1) if task else 0,
                current_run_id=run_id,
                worker_id=worker_id,
                lease_expires_at=lease_until,
                started_at=now,
                run_at=None,
                updated_at=now,
            )
            if claimed is None:
                return None
            self.runs[run_id] = Run(
                id=run_id,
                task_id=task_id,
                attempt=claimed.attempts,
                status=RunStatus.RUNNING,
                worker_id=worker_id,
                started_at=now,
                finished_at=None,
                error=None,
                stacktrace=None,
                input_tokens=0,
                output_tokens=0,
                cached_input_tokens=0,
                reasoning_tokens=0,
                cost_usd=None,
                transcript=None,
                trace_id=None,
            )
            return Claim(task=claimed, agent=self.agents.get(claimed.agent_id), run_id=run_id)

    def _holds(self, task_id: str, run_id: str) -> Task | None:
        task = self.tasks.get(task_id)
        if task is None or task.status != TaskStatus.RUNNING or task.current_run_id != run_id:
            return None
        return task

    def complete(
        self,
        task_id: str,
        run_id: str,
        *,
        result: dict[str, Any],
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        with self._lock:
            task = self._holds(task_id, run_id)
            if task is None:
                return False
            self.tasks[task_id] = replace(
                task,
                worker_id=None,
                lease_expires_at=None,
                status=TaskStatus.COMPLETED,
                result=storable_json(copy.deepcopy(result)),
                error=None,
                completed_at=now,
                **_added_usage(task, usage),
                archived_at=None,
                updated_at=now,
            )
            self._finish_run(run_id, RunStatus.COMPLETED, None, None, usage, transcript, now)
            return True

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
        with self._lock:
            task = self._holds(task_id, run_id)
            if task is None:
                return False
            final = retry_at is None
            self.tasks[task_id] = replace(
                task,
                status=TaskStatus.FAILED if final else TaskStatus.QUEUED,
                error=storable_text(error),
                run_at=retry_at,
                queued_at=task.queued_at if final else now,
                worker_id=None,
                lease_expires_at=None,
                failed_at=now if final else task.failed_at,
                **_added_usage(task, usage),
                archived_at=None,
                updated_at=now,
            )
            self._finish_run(run_id, RunStatus.FAILED, error, stacktrace, usage, transcript, now)
            return True

    def renew_leases(
        self, held: Sequence[tuple[str, str]], *, lease_until: datetime, now: datetime
    ) -> list[str]:
        with self._lock:
            renewed = [task_id for task_id, run_id in held if self._holds(task_id, run_id)]
            for task_id in renewed:
                self.tasks[task_id] = replace(self.tasks[task_id], lease_expires_at=lease_until)
            return renewed

    def recover_stalled(
        self, *, max_stalled_count: int, now: datetime, limit: int = 100
    ) -> list[StalledTask]:
        recovered: list[StalledTask] = []
        with self._lock:
            expired = [
                task
                for task in self.tasks.values()
                if task.status == TaskStatus.RUNNING
                and task.lease_expires_at is not None
                and task.lease_expires_at < now
            ]
            for task in sorted(expired, key=lambda t: (t.lease_expires_at, t.id))[:limit]:
                stalled_count = task.stalled_count + 1
                requeue = stalled_count <= max_stalled_count
                self.tasks[task.id] = replace(
                    task,
                    status=TaskStatus.QUEUED if requeue else TaskStatus.FAILED,
                    stalled_count=stalled_count,
                    attempts=task.attempts - 1 if requeue else task.attempts,
                    error=STALLED_ERROR if requeue else STALLED_LIMIT_ERROR,
                    run_at=now if requeue else None,
                    queued_at=now if requeue else task.queued_at,
                    failed_at=task.failed_at if requeue else now,
                    worker_id=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
                if task.current_run_id in self.runs:
                    self._finish_run(
                        task.current_run_id, RunStatus.STALLED, STALLED_ERROR, None, Usage(), None, now
                    )
                agent = self.agents.get(task.agent_id)
                recovered.append(
                    StalledTask(task.id, agent.kind if agent else None, requeue, stalled_count, task.attempts)
                )
        return recovered

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
        with self._lock:
            task = self._holds(task_id, run_id)
            if task is None:
                return False
            self.tasks[task_id] = replace(
                task,
                status=TaskStatus.QUEUED,
                attempts=task.attempts - 1,
                postponed_count=task.postponed_count + 1,
                run_at=run_at,
                queued_at=now,
                worker_id=None,
                lease_expires_at=None,
                **_added_usage(task, usage),
                updated_at=now,
            )
            self._finish_run(run_id, RunStatus.POSTPONED, reason, None, usage, transcript, now)
            return True

    def find_pending(self, *, created_before: datetime, limit: int = 500) -> list[WaitingTask]:
        with self._lock:
            found = [
                task
                for task in self.tasks.values()
                if task.status == TaskStatus.PENDING
                and task.task_type == "adhoc"
                and task.created_at < created_before
            ]
            return [
                self._waiting(task, task.created_at)
                for task in sorted(found, key=lambda t: t.created_at)[:limit]
            ]

    def find_queued(self, *, queued_before: datetime, limit: int = 1000) -> list[WaitingTask]:
        with self._lock:
            found = [
                task
                for task in self.tasks.values()
                if task.status == TaskStatus.QUEUED
                and task.queued_at is not None
                and task.queued_at < queued_before
            ]
            found.sort(key=lambda t: (t.queued_at, t.id))
            return [self._waiting(task, task.queued_at or task.created_at) for task in found[:limit]]

    def _waiting(self, task: Task, since: datetime) -> WaitingTask:
        agent = self.agents.get(task.agent_id)
        return WaitingTask(task.id, agent.kind if agent else None, since)

    def touch_queued(self, task_id: str, *, queued_at: datetime, now: datetime) -> bool:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None or task.status != TaskStatus.QUEUED or task.queued_at != queued_at:
                return False
            self.tasks[task_id] = replace(task, queued_at=now, updated_at=now)
            return True

    def fail_unrunnable(
        self, task_id: str, *, error: str, now: datetime, idle_too: bool = False
    ) -> Task | None:
        with self._lock:
            return self._swap(
                task_id,
                {TaskStatus(status) for status in unrunnable_statuses(idle_too)},
                status=TaskStatus.FAILED,
                error=storable_text(error),
                run_at=None,
                failed_at=now,
                updated_at=now,
            )

    def list_failed(self, *, limit: int = 100, offset: int = 0) -> list[Task]:
        with self._lock:
            failed = [
                t for t in self.tasks.values() if t.status == TaskStatus.FAILED and t.archived_at is None
            ]
        failed.sort(key=lambda t: (t.failed_at or t.updated_at, t.id), reverse=True)
        return failed[offset : offset + limit]

    def _finish_run(
        self,
        run_id: str,
        status: RunStatus,
        error: str | None,
        stacktrace: str | None,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> None:
        run = self.runs[run_id]
        self.runs[run_id] = replace(
            run,
            status=status,
            error=storable_text(error),
            stacktrace=storable_text(stacktrace),
            finished_at=now,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_usd=usage.cost_usd,
            transcript=storable_json(copy.deepcopy(transcript)),
        )

    def request_cancel(self, task_id: str, *, now: datetime) -> Task | None:
        with self._lock:
            return self._swap(task_id, {TaskStatus.RUNNING}, cancel_requested_at=now, updated_at=now)

    def cancel_requested(self, task_id: str) -> bool:
        with self._lock:
            task = self.tasks.get(task_id)
            return task is not None and task.cancel_requested_at is not None

    def finish_cancelled(
        self,
        task_id: str,
        run_id: str,
        *,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        with self._lock:
            task = self._holds(task_id, run_id)
            if task is None:
                return False
            self.tasks[task_id] = replace(
                task,
                status=TaskStatus.CANCELLED,
                worker_id=None,
                lease_expires_at=None,
                run_at=None,
                updated_at=now,
                **_added_usage(task, usage),
            )
            self._finish_run(
                run_id, RunStatus.CANCELLED, "cancelled on request", None, usage, transcript, now
            )
            return True

    def organization_spend(self, organization_id: str, *, since: datetime) -> Decimal:
        with self._lock:
            tasks = {task.id for task in self.tasks.values() if task.organization_id == organization_id}
            return sum(
                (
                    run.cost_usd or Decimal(0)
                    for run in self.runs.values()
                    if run.task_id in tasks and run.started_at >= since
                ),
                Decimal(0),
            )

    def set_schedule(
        self, task_id: str, *, cron: str, timezone: str, next_run_at: datetime, now: datetime
    ) -> Task | None:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None or task.task_type != "scheduled":
                return None
            updated = replace(
                task, schedule_cron=cron, schedule_timezone=timezone, next_run_at=next_run_at, updated_at=now
            )
            self.tasks[task_id] = updated
            return updated

    def clear_schedule(self, task_id: str, *, now: datetime) -> Task | None:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None or task.schedule_cron is None:
                return None
            updated = replace(task, schedule_cron=None, next_run_at=None, updated_at=now)
            self.tasks[task_id] = updated
            return updated

    def due_schedules(self, *, now: datetime, limit: int = 1000) -> list[DueSchedule]:
        with self._lock:
            due = [
                task
                for task in self.tasks.values()
                if task.schedule_cron is not None and task.next_run_at is not None and task.next_run_at <= now
            ]
        due.sort(key=lambda t: (t.next_run_at, t.id))
        return [
            DueSchedule(t.id, t.schedule_cron or "", t.schedule_timezone or "UTC", t.next_run_at or now)
            for t in due[:limit]
        ]

    def fire_schedules(self, firings: list[Firing], *, now: datetime) -> list[FiredSchedule]:
        fired: list[FiredSchedule] = []
        with self._lock:
            for firing in firings:
                task = self.tasks.get(firing.task_id)
                if task is None or task.schedule_cron is None or task.next_run_at != firing.due_at:
                    continue
                busy = task.status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
                changes: dict[str, Any] = {"next_run_at": firing.next_run_at, "updated_at": now}
                if not busy:
                    changes.update(
                        status=TaskStatus.QUEUED,
                        last_run_at=now,
                        queued_at=now,
                        run_at=now,
                        attempts=0,
                        stalled_count=0,
                        postponed_count=0,
                        error=None,
                        cancel_requested_at=None,
                        archived_at=None,
                    )
                self.tasks[task.id] = replace(task, **changes)
                agent = self.agents.get(task.agent_id)
                fired.append(
                    FiredSchedule(
                        task.id, agent.kind if agent else None, not busy, task.priority, task.organization_id
                    )
                )
        return fired

    def list_schedules(self, *, limit: int = 100, offset: int = 0) -> list[Task]:
        with self._lock:
            scheduled = [task for task in self.tasks.values() if task.schedule_cron is not None]
        scheduled.sort(key=lambda t: (t.next_run_at is None, t.next_run_at or t.created_at, t.id))
        return scheduled[offset : offset + limit]

    def cancel(self, task_id: str, *, now: datetime) -> Task | None:
        with self._lock:
            return self._swap(
                task_id,
                {TaskStatus.PENDING, TaskStatus.QUEUED},
                status=TaskStatus.CANCELLED,
                run_at=None,
                updated_at=now,
            )

    def requeue_failed(self, task_id: str, *, run_at: datetime, now: datetime) -> Task | None:
        with self._lock:
            return self._swap(
                task_id,
                {TaskStatus.FAILED},
                status=TaskStatus.QUEUED,
                postponed_count=0,
                cancel_requested_at=None,
                attempts=0,
                stalled_count=0,
                error=None,
                run_at=run_at,
                queued_at=now,
                failed_at=None,
                archived_at=None,
                updated_at=now,
            )

    # --- queue views --------------------------------------------------------

    def queue_counts(self, *, now: datetime) -> QueueCounts:
        counts = dict.fromkeys(("waiting", "active", "completed", "failed", "delayed"), 0)
        with self._lock:
            for task in self.tasks.values():
                if task.status == TaskStatus.QUEUED:
                    due = task.run_at is None or task.run_at <= now
                    counts["waiting" if due else "delayed"] += 1
                elif task.status == TaskStatus.RUNNING:
                    counts["active"] += 1
                elif task.status in (TaskStatus.COMPLETED, TaskStatus.FAILED) and task.archived_at is None:
                    counts[task.status.value] += 1
        return QueueCounts(**counts)

    def cleanup(self, policy: RetentionPolicy, *, now: datetime) -> CleanupResult:
        with self._lock:
            completed = self._archive(
                TaskStatus.COMPLETED, policy.completed_age_s, policy.completed_count, now
            )
            failed = self._archive(TaskStatus.FAILED, policy.failed_age_s, policy.failed_count, now)
            archived = set(completed) | set(failed)
            doomed = [run_id for run_id, run in self.runs.items() if run.task_id in archived]
            for run_id in doomed:
                del self.runs[run_id]
            return CleanupResult(len(completed), len(failed), len(doomed))

    def _archive(self, status: TaskStatus, age_s: int, keep: int, now: datetime) -> list[str]:
        def finished(task: Task) -> datetime:
            stamp = task.completed_at if status == TaskStatus.COMPLETED else task.failed_at
            return stamp or task.updated_at

        visible = [
            task
            for task in self.tasks.values()
            if task.status == status and task.archived_at is None and task.schedule_cron is None
        ]
        visible.sort(key=lambda task: (finished(task), task.id), reverse=True)
        cutoff = now - timedelta(seconds=age_s)
        doomed = [task.id for rank, task in enumerate(visible) if rank >= keep or finished(task) < cutoff]
        for task_id in doomed:
            self.tasks[task_id] = replace(self.tasks[task_id], archived_at=now, updated_at=now)
        return doomed


def _added_usage(task: Task, usage: Usage) -> dict[str, Any]:
    """The task's usage columns with a run's usage added."""
    return {
        "input_tokens": task.input_tokens + usage.input_tokens,
        "output_tokens": task.output_tokens + usage.output_tokens,
        "cached_input_tokens": task.cached_input_tokens + usage.cached_input_tokens,
        "reasoning_tokens": task.reasoning_tokens + usage.reasoning_tokens,
        "cost_usd": task.cost_usd + (usage.cost_usd or 0),
    }


def _new_record(task: NewTask, now: datetime) -> Task:
    """A new ``pending`` task row."""
    return Task(
        id=task.id or new_id(),
        agent_id=task.agent_id,
        organization_id=task.organization_id,
        title=task.title,
        description=task.description,
        task_type=task.task_type,
        context=copy.deepcopy(task.context),
        status=TaskStatus.PENDING,
        priority=task.priority,
        schedule_cron=None,
        schedule_timezone=task.schedule_timezone,
        next_run_at=None,
        last_run_at=None,
        max_attempts=task.max_attempts,
        attempts=0,
        stalled_count=0,
        result=None,
        error=None,
        run_at=None,
        current_run_id=None,
        worker_id=None,
        lease_expires_at=None,
        postponed_count=0,
        input_tokens=0,
        output_tokens=0,
        cached_input_tokens=0,
        reasoning_tokens=0,
        cost_usd=Decimal(0),
        cancel_requested_at=None,
        queued_at=None,
        started_at=None,
        completed_at=None,
        failed_at=None,
        archived_at=None,
        created_at=now,
        updated_at=now,
    )
