"""``AgentTaskQueue``: the application's handle on the queue (see docs/architecture.md, *Producer path*).

Every method validates its input first and raises an :class:`~config.errors.AgentQueueError`
subclass naming the bad value, having changed and enqueued nothing. A job's id
is its task's id; the database is the source of truth for every answer. Enqueueing is done
here: the compare-and-set in the store, then the message, marked as already queued.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dramatiq
import redis

from actors.agent_actor import AgentActor, pending_again_on_failure
from actors.approvals import (
    PendingApproval,
    check_decision,
    decision_record,
    from_request,
    pending_approval,
    rejection_output,
)
from actors.arguments import MAX_DELAY_MS as MAX_DELAY_MS
from actors.arguments import (
    check_agent,
    check_batch,
    check_delay,
    check_description,
    check_ids,
    check_page,
    check_page_size,
    check_pending,
    check_priority,
    check_task_filter,
    check_task_key,
    check_title,
    item,
    task_fields,
    unstorable_text,
)
from actors.broker.lanes import LaneBroker
from actors.errors import (
    AgentChangedConcurrently,
    AgentInactive,
    InvalidArgument,
    InvalidContext,
    NotAwaitingApproval,
    ScheduleNotChanged,
    UnknownAgentKind,
)
from actors.events import Event, EventReader
from actors.schedules.cron import parse_schedule
from config.errors import AgentQueueError, ConfigError, short_repr
from middleware.cancel_watch import signal_cancel
from middleware.events import NO_EVENTS, EventSink, EventType
from middleware.lifecycle_events import decision_event, queued_event
from middleware.pause import PausableBroker
from middleware.task_lifecycle import queued_options
from taskstore import (
    Agent,
    AgentNotFound,
    CleanupResult,
    InvalidTransition,
    NewTask,
    Overview,
    RetentionPolicy,
    Run,
    Task,
    TaskFilter,
    TaskKey,
    TaskNotFound,
    TaskStatus,
    TaskStore,
    TaskSummary,
    normalize_id,
    utcnow,
)
from taskstore.models import TASK_TYPES

logger = logging.getLogger("agentq.lifecycle")


@dataclass(frozen=True)
class QueueStats:
    """Exact job counts, read from the database in one query."""

    waiting: int
    active: int
    completed: int
    failed: int
    delayed: int
    #: Jobs that would be waiting but the queue is paused (``waiting`` is 0 while paused).
    paused: int = 0
    #: Jobs waiting for a person to approve or reject a tool call (no worker held).
    awaiting_approval: int = 0


@dataclass(frozen=True)
class Job:
    """The queue's view of one task (``job.id == task.id``)."""

    id: str
    status: TaskStatus
    priority: int
    attempts_made: int
    max_attempts: int
    failed_reason: str | None
    #: Stack traces of the failed attempts, oldest first.
    stacktrace: list[str]
    result: dict[str, Any] | None
    task: Task
    runs: tuple[Run, ...]
    #: The tool call the job waits for a person to approve (status ``awaiting_approval``), else None.
    pending_approval: PendingApproval | None = None

    @classmethod
    def from_task(cls, task: Task, runs: list[Run], pending: PendingApproval | None = None) -> Job:
        return cls(
            id=task.id,
            status=task.status,
            priority=task.priority,
            attempts_made=task.attempts,
            max_attempts=task.max_attempts,
            failed_reason=task.error,
            stacktrace=[run.stacktrace for run in runs if run.stacktrace],
            result=task.result,
            task=task,
            runs=tuple(runs),
            pending_approval=pending,
        )


@dataclass(frozen=True)
class TaskPage:
    """One page of :meth:`AgentTaskQueue.list_tasks`, newest first, with the keys of its neighbours."""

    items: list[TaskSummary]
    #: Pass as ``after`` for the next (older) page; ``None`` on the last page.
    older: TaskKey | None
    #: Pass as ``before`` for the previous (newer) page; ``None`` on the first page.
    newer: TaskKey | None


class AgentTaskQueue:
    """Creates, enqueues and inspects agent tasks."""

    def __init__(
        self,
        store: TaskStore,
        broker: dramatiq.Broker,
        *,
        max_attempts: int = 3,
        max_context_bytes: int = 64 * 1024,
        retention: RetentionPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        events: EventSink = NO_EVENTS,
        reader: EventReader | None = None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.max_attempts = max_attempts
        self.max_context_bytes = max_context_bytes
        self.retention = retention or RetentionPolicy()
        self.clock = clock
        #: Where ``queued`` and ``cancelled`` events go, and what reads a task's events.
        self.event_sink = events
        self.event_reader = reader if reader is not None else EventReader(None, store)

    # --- creating and enqueuing ----------------------------------------------

    def create_task(
        self,
        *,
        agent_id: str,
        organization_id: str,
        title: str,
        description: str | None = None,
        context: Mapping[str, Any] | None = None,
        priority: int = 5,
        task_type: str = "adhoc",
    ) -> Task:
        """Insert a ``pending`` task for an active agent of the same organization.

        ``title`` is 1 to :data:`~actors.arguments.MAX_TITLE_CHARS` (500) characters, ``description``
        at most :data:`~actors.arguments.MAX_DESCRIPTION_CHARS` (20,000).

        Raises:
            InvalidArgument: A bad argument (e.g. a title or description over its limit).
            AgentNotFound, AgentInactive, AgentOrganizationMismatch: No such agent for the organization.
            UnknownAgentKind: The agent's kind has no actor: nothing could ever run the task.
        """
        new = self._new_task(
            agent_id=agent_id,
            organization_id=organization_id,
            title=title,
            description=description,
            context=context,
            priority=priority,
            task_type=task_type,
        )
        kinds = self.agent_kinds()
        for _ in range(2):
            # The fast path: the agent check and the insert in one statement.
            created = self.store.create_runnable_task(new, kinds=kinds, now=self.clock())
            if created is not None:
                return created
            # Nothing inserted: say why; if nothing is wrong now, the agent changed meanwhile: try again.
            self._check_new_agent(self.store.get_agent(new.agent_id), new)
        raise AgentChangedConcurrently(new.agent_id)

    def create_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> list[Task]:
        """Insert many ``pending`` tasks at once, all or none; each mapping holds ``create_task``'s arguments.

        Every item is checked first, as ``create_task`` checks it (the error names the item, e.g.
        ``tasks[3]: title '' must be a non-empty string``); each distinct agent is read once; then all
        rows are inserted in one statement. Returns the tasks in the given order. At most
        :data:`~actors.arguments.MAX_BATCH` (1,000) tasks per call.
        """
        tasks = check_batch("tasks", tasks, "mappings of create_task's arguments")
        batch: list[NewTask] = []
        for index, fields in enumerate(tasks):
            with item("tasks", index):
                batch.append(self._new_task(**task_fields(fields)))
        if not batch:
            return []
        agent_ids = dict.fromkeys(new.agent_id for new in batch)
        agents = {agent_id: self.store.get_agent(agent_id) for agent_id in agent_ids}
        for index, new in enumerate(batch):
            with item("tasks", index):
                self._check_new_agent(agents[new.agent_id], new)
        return self.store.create_tasks(batch, now=self.clock())

    def add_task(self, task_id: str, priority: int | None = None, delay_ms: int = 0) -> Job:
        """Queue a ``pending`` task, now or after ``delay_ms``; ``priority`` None keeps the row's.

        Raises:
            InvalidTaskId, InvalidPriority, InvalidDelay: Bad arguments.
            TaskNotFound, AgentNotFound, AgentInactive, UnknownAgentKind: Nothing to run it with.
            InvalidTransition: The task is not pending (use ``retry_job`` for a failed one).
            BrokerUnavailable: Redis is down; the task stays ``pending``.
        """
        task_id = normalize_id(task_id)
        if priority is not None:
            check_priority(priority)
        check_delay(delay_ms)
        kinds = self.agent_kinds()
        for _ in range(2):
            # The fast path: the agent check, the compare-and-set and the agent's kind in one statement.
            now = self.clock()
            due = now + timedelta(milliseconds=delay_ms)
            queued = self.store.queue_runnable_task(
                task_id, kinds=kinds, priority=priority, run_at=due, now=now
            )
            if queued is not None:
                task = queued.task
                self._send([(kinds[queued.agent_kind], task)], delay_ms, queued_at=now, by="add_task")
                _log_added(task, delay_ms)
                return Job.from_task(task, self.store.get_runs(task_id) if task.attempts else [])
            # Nothing changed: say why; if nothing is wrong now, the row changed meanwhile: try again.
            task = self._task(task_id)
            check_pending(task)
            self._actor_for(task)
        return self._not_queued(task_id)

    def add_tasks(self, task_ids: Sequence[str], priority: int | None = None, delay_ms: int = 0) -> list[Job]:
        """Queue many ``pending`` tasks at once, all or none: the bulk :meth:`add_task`.

        Everything is checked before anything changes: the ids (no id twice), ``priority`` and
        ``delay_ms`` here; that every task exists, is pending and has an active agent whose kind has an
        actor, in the one store call that moves them all ``pending → queued`` (only when it refuses are
        the tasks and agents read, to say why); at most :data:`~actors.arguments.MAX_BATCH` (1,000) ids.
        Then one Redis transaction enqueues their messages (on the :class:`~actors.broker.lanes.LaneBroker`;
        another broker gets one enqueue per message). Logs ``added to queue`` per task.

        Raises:
            InvalidTaskId, InvalidArgument, InvalidPriority, InvalidDelay: Bad arguments.
            TaskNotFound, AgentNotFound, AgentInactive, UnknownAgentKind: For the first task concerned.
            InvalidTransition: A task is not pending (also if it stopped being pending meanwhile).
            BrokerUnavailable: Redis is down; every task stays ``pending``.
        """
        ids = check_ids(task_ids)
        if priority is not None:
            check_priority(priority)
        check_delay(delay_ms)
        if not ids:
            return []
        kinds = self.agent_kinds()
        for _ in range(2):
            # The fast path: the agent checks, the compare-and-set and the agents' kinds in one statement.
            now = self.clock()
            due = now + timedelta(milliseconds=delay_ms)
            queued = self.store.queue_runnable_tasks(ids, kinds=kinds, priority=priority, run_at=due, now=now)
            if queued is not None:
                break
            # Nothing changed: say why (the first task concerned); if nothing is wrong now, the rows
            # changed meanwhile: try again.
            self._check_queueable(ids)
        else:
            raise self._changed_meanwhile(ids)
        self._send(
            [(kinds[one.agent_kind], one.task) for one in queued], delay_ms, queued_at=now, by="add_tasks"
        )
        for one in queued:
            _log_added(one.task, delay_ms)
        return [
            Job.from_task(one.task, self.store.get_runs(one.task.id) if one.task.attempts else [])
            for one in queued
        ]

    def add_scheduled_task(self, task_id: str, cron_expression: str, timezone: str | None = None) -> Job:
        """Run a ``scheduled`` task on a cron schedule in a time zone (default: the row's, then UTC).

        Standard 5-field cron (``*``, lists, ranges, steps, month and weekday names, day-of-week
        0 and 7 both Sunday, ``@hourly`` … ``@yearly``); see :mod:`actors.schedules.cron` for daylight saving.
        Replaces any schedule the task had. The first firing is the next slot after now.

        Raises:
            InvalidTaskId, TaskNotFound: No such task.
            InvalidCronExpression, UnknownTimezone: Nothing was stored.
            InvalidArgument: The task is ad hoc (created with ``task_type="adhoc"``).
            AgentNotFound, AgentInactive, UnknownAgentKind: Nothing could run it.
        """
        task_id = normalize_id(task_id)
        task = self._task(task_id)
        schedule = parse_schedule(
            cron_expression, timezone if timezone is not None else task.schedule_timezone
        )
        if task.task_type != "scheduled":
            raise InvalidArgument(
                f"task {task_id!r} is an ad-hoc task; only a task created with task_type='scheduled' can have"
                " a schedule"
            )
        self._actor_for(task)
        now = self.clock()
        next_run = schedule.next_after(now)
        updated = self.store.set_schedule(
            task_id, cron=schedule.expression, timezone=schedule.timezone, next_run_at=next_run, now=now
        )
        if updated is None:
            raise TaskNotFound(task_id)
        local = next_run.astimezone(ZoneInfo(schedule.timezone))
        logger.info(
            '[AgentTaskQueue] Task %s scheduled with "%s" (%s); next run at %s (%s)',
            task_id,
            schedule.expression,
            schedule.timezone,
            next_run.isoformat(),
            local.isoformat(),
        )
        return Job.from_task(updated, self.store.get_runs(task_id))

    def list_schedules(self, limit: int = 100, offset: int = 0) -> list[Task]:
        """Tasks with a schedule, soonest next run first."""
        check_page(limit, offset)
        return self.store.list_schedules(limit=limit, offset=offset)

    def retry_job(self, job_id: str, *, resume: bool = False) -> Job:
        """Queue a ``failed`` task again with a fresh set of attempts.

        Args:
            job_id: The job (task) id.
            resume: Go on after the completed steps of the failed firing (its model calls are not
                requested again, its tools not run again); by default a new firing starts from the
                first step.

        Raises:
            InvalidTaskId, TaskNotFound: No such job.
            InvalidArgument: ``resume`` is not a bool.
            InvalidTransition: The job has not failed (or was retried concurrently).
            AgentNotFound, AgentInactive, UnknownAgentKind: Nothing could run it; it stays ``failed``.
            BrokerUnavailable: Redis is down; the task is left ``pending`` (the reconciler enqueues it).
        """
        task_id = normalize_id(job_id, "job id")
        if not isinstance(resume, bool):
            raise InvalidArgument(f"resume {short_repr(resume)} must be True or False")
        task = self._task(task_id)
        if task.status != TaskStatus.FAILED:
            raise InvalidTransition(
                task_id, task.status.value, TaskStatus.QUEUED.value, "only failed jobs can be retried"
            )
        retried = self._requeue(task, self._actor_for(task), resume=resume)
        return Job.from_task(retried, self.store.get_runs(task_id))

    def list_dead_letters(self, limit: int = 100, offset: int = 0) -> list[Job]:
        """Failed jobs (attempts exhausted or non-retryable), most recent first; kept 7 days by retention."""
        check_page(limit, offset)
        return [
            Job.from_task(task, self.store.get_runs(task.id))
            for task in self.store.list_failed(limit=limit, offset=offset)
        ]

    def retry_dead_letters(self) -> int:
        """Retry every dead-lettered job with a fresh set of attempts; returns how many were re-queued."""
        retried = skipped = 0
        actors: dict[str, AgentActor] = {}
        # Retried jobs leave the failed list; the ones that cannot be retried stay, so skip past them.
        while batch := self.store.list_failed(limit=500, offset=skipped):
            for task in batch:
                try:
                    if task.agent_id not in actors:
                        actors[task.agent_id] = self._actor_for(task)
                    self._requeue(task, actors[task.agent_id])
                    retried += 1
                except (InvalidTransition, AgentNotFound, AgentInactive, UnknownAgentKind) as exc:
                    skipped += 1
                    logger.warning("[AgentTaskQueue] Dead-lettered job %s not retried: %s", task.id, exc)
        return retried

    # --- inspecting and removing ----------------------------------------------

    def events(
        self, task_id: str, after: str | None = None, follow: bool = True, timeout_s: float | None = None
    ) -> Iterator[Event]:
        """The task's live events, oldest first: from the beginning, or after the event whose id is ``after``.

        Each :class:`~actors.events.Event` has ``id``, ``type`` (``queued``, ``running``, ``llm_started``,
        ``llm_delta``, ``llm_completed``, ``tool_started``, ``tool_completed``, ``retrying``,
        ``postponed``, ``completed``, ``failed``, ``cancelled``), ``task_id``, ``at`` and ``data``. With
        ``follow`` the iterator waits for new events until the task ends (a ``completed``, ``failed`` or
        ``cancelled`` event is the latest) or ``timeout_s`` has passed; without it, it stops at the
        latest event. When the task's stream has expired (``AGENTQ_EVENTS_TTL_S`` after the task ended)
        the events are rebuilt from the database (the step ledger, the task and its runs), marked
        ``replayed``. The arguments and the task are checked before this returns.

        Raises:
            InvalidTaskId, InvalidEventId, InvalidArgument: A malformed ``task_id``, ``after``, ``follow``
                or ``timeout_s``.
            TaskNotFound: No task has this id.
            EventsUnavailable: The broker has no Redis (while reading: Redis stopped answering).
        """
        return self.event_reader.events(task_id, after=after, follow=follow, timeout_s=timeout_s)

    def get_job(self, job_id: str) -> Job | None:
        """The job, or ``None`` if no such task exists or its record was cleaned up."""
        task_id = normalize_id(job_id, "job id")
        task = self.store.get_task(task_id)
        if task is None or task.archived_at is not None:
            return None
        return Job.from_task(task, self.store.get_runs(task_id), self._pending(task))

    def _pending(self, task: Task) -> PendingApproval | None:
        """What ``task`` waits for, when it awaits approval (one more read, only then)."""
        if task.status != TaskStatus.AWAITING_APPROVAL:
            return None
        steps = self.store.get_steps(task.id)
        return pending_approval(task, next((s for s in steps if s.status == "awaiting_approval"), None))

    # --- approvals ------------------------------------------------------------

    def approve(self, task_id: str, note: str | None = None, decided_by: str | None = None) -> Job:
        """Approve the tool call a task waits for: the task is queued again and its run resumes, runs the
        tool once and goes on. The decision (``decided_by``, when, ``note``) is recorded on the step.

        A compare-and-set: of two decisions at once one wins, the other raises :class:`NotAwaitingApproval`.

        Raises:
            InvalidTaskId, TaskNotFound, InvalidArgument: Bad arguments (``note`` at most 2,000 characters,
                ``decided_by`` 200).
            NotAwaitingApproval: The task waits for no decision.
            AgentNotFound, AgentInactive, UnknownAgentKind: Nothing could run it; nothing changed.
            BrokerUnavailable: Redis did not take the message; the task stays queued (the reconciler
                sends it again).
        """
        by, text = check_decision(decided_by=decided_by, note=note)
        return self._decide(task_id, approved=True, decided_by=by, text=text)

    def reject(self, task_id: str, reason: str, decided_by: str | None = None) -> Job:
        """Reject the tool call a task waits for: the tool never runs; the task is queued again and its run
        resumes with ``rejected by a person: <reason>`` as the tool's result, and the model goes on. The
        decision is recorded on the step. A compare-and-set, as :meth:`approve`.

        Raises:
            As :meth:`approve`; ``reason`` must be a non-empty string of at most 2,000 characters.
        """
        by, text = check_decision(decided_by=decided_by, reason=reason, rejecting=True)
        return self._decide(task_id, approved=False, decided_by=by, text=text)

    def list_approvals(self, limit: int = 100, offset: int = 0) -> list[PendingApproval]:
        """The tool calls waiting for a decision, the longest waiting first."""
        check_page(limit, offset)
        pending = (from_request(request) for request in self.store.list_approvals(limit=limit, offset=offset))
        return [item for item in pending if item is not None]

    def _decide(self, task_id: str, *, approved: bool, decided_by: str | None, text: str | None) -> Job:
        task_id = normalize_id(task_id)
        task = self._task(task_id)
        if task.status != TaskStatus.AWAITING_APPROVAL:
            raise NotAwaitingApproval(task_id, task.status.value)
        actor = self._actor_for(task)  # nothing can run it: say so before deciding anything
        now = self.clock()
        decided = self.store.decide_approval(
            task_id,
            decision=decision_record(approved, decided_by, text, now),
            output=None if approved or text is None else rejection_output(text),
            now=now,
        )
        if decided is None:  # another decision was taken meanwhile
            raise NotAwaitingApproval(task_id, self._task(task_id).status.value)
        verdict = "approved" if approved else "rejected"
        logger.info(
            "[AgentTaskQueue] Job %s %s by %s; queued to resume", task_id, verdict, decided_by or "someone"
        )
        message = actor.message_with_options(
            args=(task_id,), **queued_options(decided.priority, decided.organization_id)
        )
        self.event_sink.publish(task_id, *decision_event(approved, decided_by, text))
        self.event_sink.publish(task_id, EventType.QUEUED, queued_event(decided, 0, verdict))
        self.event_sink.flush()  # the decision and queued before the resumed attempt's running
        with pending_again_on_failure(self.store, [task_id], queued_at=None, clock=self.clock):
            self.broker.enqueue(message)
        return Job.from_task(decided, self.store.get_runs(task_id))

    def remove_job(self, job_id: str) -> None:
        """Cancel a job: a waiting, delayed or approval-awaiting one at once; a running one within about a
        second, wherever it runs, also in the middle of a model call or a tool call (the interrupted step
        is recorded failed "cancelled"). Either way it ends ``cancelled``. A scheduled job's schedule is
        removed, so it never fires again. A finished or cancelled job is otherwise left as is.

        Raises:
            TaskNotFound: No such job.
        """
        task_id = normalize_id(job_id, "job id")
        now = self.clock()
        if self.store.clear_schedule(task_id, now=now) is not None:
            logger.info("[AgentTaskQueue] Job %s will not fire again: its schedule was removed", task_id)
        if self.store.cancel(task_id, now=now) is not None:
            logger.info("[AgentTaskQueue] Job %s removed", task_id)
            self.event_sink.publish(task_id, EventType.CANCELLED, {"by": "remove_job"})
            return
        running = self.store.request_cancel(task_id, now=now)
        if running is not None:
            try:
                if running.current_run_id is not None:
                    signal_cancel(self.broker, task_id, running.current_run_id)
            except redis.RedisError as exc:
                logger.warning(
                    "[AgentTaskQueue] Job %s: Redis did not take the cancel request (%s); the run stops"
                    " at its next step",
                    task_id,
                    exc,
                )
            logger.info("[AgentTaskQueue] Job %s asked to stop; it ends cancelled", task_id)
            return
        self._task(task_id)  # raises TaskNotFound for an unknown id

    def pause_queue(self) -> None:
        """Stop every worker, current and future, from starting tasks; active ones finish.

        Raises:
            ConfigError: The broker has no pause switch (only the Redis lane broker has one).
        """
        self._pausable_broker().pause()
        logger.info("[AgentTaskQueue] Queue paused")

    def resume_queue(self) -> None:
        """Let workers start tasks again, where they stopped."""
        self._pausable_broker().resume()
        logger.info("[AgentTaskQueue] Queue resumed")

    def is_paused(self) -> bool:
        """Whether the queue is paused (never, on a broker without a pause switch)."""
        return isinstance(self.broker, PausableBroker) and self.broker.paused()

    def _pausable_broker(self) -> PausableBroker:
        if not isinstance(self.broker, PausableBroker):
            raise ConfigError(
                f"{type(self.broker).__name__} cannot be paused: pausing needs the Redis lane broker"
            )
        return self.broker

    def get_queue_stats(self) -> QueueStats:
        """Exact counts from the database; while the queue is paused, waiting jobs count as ``paused``."""
        counts = self.store.queue_counts(now=self.clock())
        if self.is_paused():
            return QueueStats(
                waiting=0,
                active=counts.active,
                completed=counts.completed,
                failed=counts.failed,
                delayed=counts.delayed,
                paused=counts.waiting,
                awaiting_approval=counts.awaiting_approval,
            )
        return QueueStats(
            waiting=counts.waiting,
            active=counts.active,
            completed=counts.completed,
            failed=counts.failed,
            delayed=counts.delayed,
            awaiting_approval=counts.awaiting_approval,
        )

    def cleanup_jobs(self) -> CleanupResult:
        """Apply retention: completed jobs 24 h / last 1000, failed 7 days / last 5000 (configurable)."""
        result = self.store.cleanup(self.retention, now=self.clock())
        logger.info(
            "[AgentTaskQueue] Cleaned up %s completed and %s failed jobs",
            result.archived_completed,
            result.archived_failed,
        )
        return result

    # --- the operator's views and schedule controls (the dashboard uses these) --------

    def list_tasks(
        self,
        task_filter: TaskFilter | None = None,
        *,
        limit: int = 50,
        after: TaskKey | None = None,
        before: TaskKey | None = None,
    ) -> TaskPage:
        """Tasks matching ``task_filter``, newest first, a page at a time (keyset paging, archived ones
        too): the first page, or the page just older than ``after`` / just newer than ``before``.

        Raises:
            InvalidArgument: A bad filter or key, ``limit`` outside 1 to 500, or ``after`` with ``before``.
            InvalidTaskId: A filter's agent or organization id, or a key's task id, is not a UUID.
        """
        task_filter = check_task_filter(task_filter)
        check_page_size(limit)
        after, before = check_task_key("after", after), check_task_key("before", before)
        if after is not None and before is not None:
            raise InvalidArgument("give after or before, not both")
        rows = self.store.list_tasks(task_filter, limit=limit + 1, after=after, before=before)
        if before is not None:
            items = rows[-limit:]
            return TaskPage(
                items, items[-1].key if items else before, items[0].key if len(rows) > limit else None
            )
        items = rows[:limit]
        return TaskPage(
            items, items[-1].key if len(rows) > limit else None, items[0].key if after and items else None
        )

    def get_overview(self, organization_id: str | None = None) -> Overview:
        """The queue at a glance (:meth:`TaskStore.overview <taskstore.base.TaskStore.overview>`), of one
        organization or all; while the queue is paused, waiting tasks count as ``paused``, as in
        :meth:`get_queue_stats`."""
        if organization_id is not None:
            organization_id = normalize_id(organization_id, "organization id")
        overview = self.store.overview(now=self.clock(), organization_id=organization_id)
        if not self.is_paused():
            return overview
        counts = {**overview.counts, "paused": overview.counts.get("waiting", 0), "waiting": 0}
        return replace(overview, counts=counts)

    def disable_schedule(self, job_id: str) -> Job:
        """Stop a scheduled job from firing, keeping its cron expression and time zone.

        Raises:
            InvalidTaskId, TaskNotFound: No such job.
            ScheduleNotChanged: It has no schedule, or its schedule is already disabled.
        """
        task_id = normalize_id(job_id, "job id")
        disabled = self.store.disable_schedule(task_id, now=self.clock())
        if disabled is None:
            task = self._task(task_id)
            state = "has no schedule" if task.schedule_cron is None else "its schedule is already disabled"
            raise ScheduleNotChanged(task_id, state)
        logger.info("[AgentTaskQueue] Schedule of job %s disabled", task_id)
        return self._job(task_id)

    def enable_schedule(self, job_id: str) -> Job:
        """Let a disabled schedule fire again, from its next slot after now.

        Raises:
            InvalidTaskId, TaskNotFound: No such job.
            ScheduleNotChanged: It has no schedule, or its schedule is not disabled.
            InvalidCronExpression, UnknownTimezone: The stored schedule is unusable.
        """
        task_id = normalize_id(job_id, "job id")
        task = self._task(task_id)
        if task.schedule_cron is None:
            raise ScheduleNotChanged(task_id, "has no schedule")
        now = self.clock()
        next_run = parse_schedule(task.schedule_cron, task.schedule_timezone).next_after(now)
        if self.store.enable_schedule(task_id, next_run_at=next_run, now=now) is None:
            raise ScheduleNotChanged(task_id, "its schedule is not disabled (or was changed meanwhile)")
        logger.info(
            "[AgentTaskQueue] Schedule of job %s enabled; next run at %s", task_id, next_run.isoformat()
        )
        return self._job(task_id)

    def run_schedule_now(self, job_id: str) -> Job:
        """Fire a scheduled job out of turn, as its schedule would: ``queued`` with a fresh set of attempts
        and a message sent; its next scheduled run stays. Not while its previous run is queued or running.

        Raises:
            InvalidTaskId, TaskNotFound: No such job.
            ScheduleNotChanged: It has no schedule, or its previous run is still queued or running.
            AgentNotFound, AgentInactive, UnknownAgentKind: Nothing could run it; nothing changed.
            BrokerUnavailable: Redis is down; the task stays ``queued`` and the reconciler sends it.
        """
        task_id = normalize_id(job_id, "job id")
        task = self._task(task_id)
        if task.schedule_cron is None:
            raise ScheduleNotChanged(task_id, "has no schedule")
        actor = self._actor_for(task)
        fired = self.store.fire_schedule_now(task_id, now=self.clock())
        if fired is None:
            current = self._task(task_id)
            reason = (
                "has no schedule" if current.schedule_cron is None else f"its run is {current.status.value}"
            )
            raise ScheduleNotChanged(task_id, reason)
        self._send([(actor, fired)], 0, queued_at=None, by="run_schedule_now")
        _log_added(fired, 0)
        return self._job(task_id)

    # --- helpers --------------------------------------------------------------

    def _task(self, task_id: str) -> Task:
        task = self.store.get_task(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    def _job(self, task_id: str) -> Job:
        return Job.from_task(self._task(task_id), self.store.get_runs(task_id))

    def _new_task(
        self,
        *,
        agent_id: str,
        organization_id: str,
        title: str,
        description: str | None = None,
        context: Mapping[str, Any] | None = None,
        priority: int = 5,
        task_type: str = "adhoc",
    ) -> NewTask:
        """``create_task``'s arguments, checked (all but the agent, which needs the store)."""
        agent_id = normalize_id(agent_id, "agent id")
        organization_id = normalize_id(organization_id, "organization id")
        check_priority(priority)
        check_title(title)
        check_description(description)
        if task_type not in TASK_TYPES:
            raise InvalidArgument(f"task_type {short_repr(task_type)} is not one of {', '.join(TASK_TYPES)}")
        return NewTask(
            agent_id=agent_id,
            organization_id=organization_id,
            title=title,
            description=description,
            task_type=task_type,
            context=self._check_context(context),
            priority=priority,
            max_attempts=self.max_attempts,
        )

    def _requeue(self, task: Task, actor: AgentActor, *, resume: bool = False) -> Task:
        """``failed → queued`` by compare-and-set, then the message; a refusal is explained with one read."""
        now = self.clock()
        retried = self.store.requeue_failed(task.id, run_at=now, now=now, resume=resume)
        if retried is None:
            current = self._task(task.id)
            raise InvalidTransition(
                task.id, current.status.value, TaskStatus.QUEUED.value, "retried concurrently"
            )
        self._send([(actor, retried)], 0, queued_at=now, by="retry_job")
        logger.info("[AgentTaskQueue] Job %s retried (priority: %s)", task.id, retried.priority)
        return retried

    def _not_queued(self, task_id: str) -> Job:
        """``add_task``'s compare-and-set found the task no longer pending: the job if another producer
        queued it meanwhile, else the error saying why."""
        current = self._task(task_id)
        if current.status != TaskStatus.QUEUED:
            hint = "use retry_job for a failed task" if current.status == TaskStatus.FAILED else ""
            raise InvalidTransition(task_id, current.status.value, TaskStatus.QUEUED.value, hint)
        return Job.from_task(current, self.store.get_runs(task_id) if current.attempts else [])

    def _send(
        self,
        queued: Sequence[tuple[AgentActor, Task]],
        delay_ms: int,
        *,
        queued_at: datetime | None,
        by: str,
    ) -> None:
        """Send the messages of tasks this call moved to ``queued`` at ``queued_at``, marked as queued and
        in their lanes (so ``TaskLifecycle`` leaves the database alone); if that fails they are put back
        (:func:`~actors.agent_actor.pending_again_on_failure`; ``queued_at`` None: they stay queued, for
        the reconciler). Several go in one Redis transaction on the lane broker, one by one on any other
        broker.

        Each task's ``queued`` event (``by`` the caller) is published first and flushed, so that it comes
        before the ``running`` of the worker that takes the message. If Redis then refuses the messages
        the tasks are ``pending`` again, and their next enqueue publishes ``queued`` again."""
        self.event_sink.publish_many(
            [(task.id, EventType.QUEUED, queued_event(task, delay_ms, by)) for _, task in queued]
        )
        self.event_sink.flush()
        messages = [
            actor.message_with_options(args=(task.id,), **queued_options(task.priority, task.organization_id))
            for actor, task in queued
        ]
        delay = delay_ms or None
        task_ids = [task.id for _, task in queued]
        with pending_again_on_failure(self.store, task_ids, queued_at=queued_at, clock=self.clock):
            if len(messages) > 1 and isinstance(self.broker, LaneBroker):
                self.broker.enqueue_many(messages, delay=delay)
                return
            for message in messages:
                self.broker.enqueue(message, delay=delay)

    def _check_queueable(self, task_ids: list[str]) -> None:
        """Raise the error for the first of ``task_ids`` that cannot be queued: missing, not pending, or
        without an agent that can run it (each distinct agent read once)."""
        found = {task.id: task for task in self.store.get_tasks(task_ids)}
        checked: set[str] = set()
        for task_id in task_ids:
            task = found.get(task_id)
            if task is None:
                raise TaskNotFound(task_id)
            check_pending(task)
            if task.agent_id not in checked:
                self._actor_for(task)
                checked.add(task.agent_id)

    def _changed_meanwhile(self, task_ids: list[str]) -> AgentQueueError:
        """The error for a batch whose tasks stopped being pending between the check and the update."""
        current = {task.id: task for task in self.store.get_tasks(task_ids)}
        for task_id in task_ids:
            task = current.get(task_id)
            if task is None:
                return TaskNotFound(task_id)
            if task.status != TaskStatus.PENDING:
                return InvalidTransition(
                    task_id,
                    task.status.value,
                    TaskStatus.QUEUED.value,
                    "changed concurrently; nothing queued",
                )
        return InvalidTransition(
            task_ids[0], TaskStatus.PENDING.value, TaskStatus.QUEUED.value, "a concurrent change; try again"
        )

    def _actor_for(self, task: Task) -> AgentActor:
        """The actor of ``task``'s agent's kind (one read of the agent)."""
        agent = self.store.get_agent(task.agent_id)
        if agent is None:
            raise AgentNotFound(task.agent_id)
        if not agent.is_active:
            raise AgentInactive(agent.id)
        return self._actor_of_kind(agent.kind)

    def _actor_of_kind(self, kind: str) -> AgentActor:
        """The actor of agent kind ``kind``; :class:`UnknownAgentKind` (naming it) if it has none."""
        try:
            actor = self.broker.get_actor(kind)
        except dramatiq.errors.ActorNotFound:
            actor = None
        if not isinstance(actor, AgentActor):
            raise UnknownAgentKind(kind, sorted(self.agent_kinds()))
        return actor

    def _check_new_agent(self, agent: Agent | None, new: NewTask) -> None:
        """``check_agent``, and that the agent's kind has an actor: a task nothing could run is refused."""
        check_agent(agent, new)
        if agent is not None:
            self._actor_of_kind(agent.kind)

    def agent_kinds(self) -> dict[str, AgentActor]:
        """Declared agent kinds by name."""
        actors = (self.broker.get_actor(name) for name in self.broker.get_declared_actors())
        return {actor.kind: actor for actor in actors if isinstance(actor, AgentActor)}

    def _check_context(self, context: Mapping[str, Any] | None) -> dict[str, Any]:
        if context is None:
            return {}
        if not isinstance(context, Mapping):
            raise InvalidContext(f"context {short_repr(context)} must be a JSON object (a mapping)")
        try:
            encoded = json.dumps(context, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidContext(f"context is not JSON-serialisable: {exc}") from exc
        size = len(encoded.encode())
        if size > self.max_context_bytes:
            raise InvalidContext(f"context is {size} bytes of JSON; the limit is {self.max_context_bytes}")
        problem = unstorable_text(context)
        if problem is not None:
            raise InvalidContext(f"context contains {problem}, which the database cannot store")
        decoded: dict[str, Any] = json.loads(encoded)
        return decoded


def _log_added(task: Task, delay_ms: int) -> None:
    """The lifecycle line of one enqueue (``TaskLifecycle`` logs it for a bare ``send``)."""
    logger.info(
        "[AgentTaskQueue] Task %s added to queue (priority: %s, delay: %sms)",
        task.id,
        task.priority,
        delay_ms,
    )
