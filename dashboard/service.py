"""What the dashboard reads and does, for pages and API alike, always as one operator (a :class:`Principal`).

Reads come from the task store through the queue facade (``list_tasks``, ``get_overview``) or, for a
single task, from the store itself (an archived task stays visible here although ``get_job`` hides it).
Every action is one call of the public facade — ``retry_job``, ``remove_job``, ``pause_queue``,
``resume_queue``, ``run_schedule_now``, ``enable_schedule``, ``disable_schedule`` — each a
compare-and-set, and each is written to the audit log by the caller (:mod:`dashboard.routes`). An operator
bound to one organization sees only its tasks: another organization's task is "not found".
These functions block (database, Redis): the routes run them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import redis

from actors.approvals import PendingApproval, pending_approval
from actors.budget import BudgetPolicy
from actors.task_queue import AgentTaskQueue, Job, TaskPage
from config.errors import AgentQueueError
from dashboard.access import Principal
from dashboard.extensions import Extensions
from dashboard.params import ListQuery
from middleware.presence import WorkerInfo, read_workers
from taskstore import (
    InvalidTransition,
    Overview,
    Step,
    Task,
    TaskFilter,
    TaskNotFound,
    TaskStatus,
    normalize_id,
)

#: Most tasks one bulk action touches; a larger selection is done in several rounds.
MAX_BULK = 1000
#: Statuses a bulk cancel takes: waiting tasks are cancelled, running ones asked to stop.
CANCELLABLE = (TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.AWAITING_APPROVAL)
#: Schedules shown on one page of the schedules view.
SCHEDULES_PAGE = 100
#: Approvals shown on one page of the approvals view.
APPROVALS_PAGE = 100


class Forbidden(AgentQueueError):
    """The operator may not do this (a read-only token, or one bound to an organization)."""


@dataclass
class Dashboard:
    """The dashboard's handles on the system: the queue facade, the budget caps, Redis, settings."""

    queue: AgentTaskQueue
    budget: BudgetPolicy = field(default_factory=BudgetPolicy)
    #: The broker's Redis client and key namespace (workers' presence); ``None`` on a broker without Redis.
    redis: redis.Redis | None = None
    namespace: str = "agentq"
    trace_url_template: str | None = None
    refresh_s: float = 5.0
    extensions: Extensions = field(default_factory=Extensions)

    # --- reads ----------------------------------------------------------------

    def overview(self, who: Principal) -> OverviewView:
        overview = self.queue.get_overview(who.organization_id)
        spend = [
            SpendRow(item.organization_id, item.today, item.month, self.budget.cap_for(item.organization_id))
            for item in overview.spend
        ]
        return OverviewView(overview, self.queue.is_paused(), spend)

    def tasks(self, who: Principal, query: ListQuery) -> TaskPage:
        return self.queue.list_tasks(
            query.task_filter, limit=query.limit, after=query.after, before=query.before
        )

    def job(self, who: Principal, task_id: str) -> Job:
        """The job of ``task_id`` (archived ones too), with the tool call it waits to have approved, if
        any; :class:`TaskNotFound` if the operator cannot see it."""
        task = self.task(who, task_id)
        pending = None
        if task.status == TaskStatus.AWAITING_APPROVAL:
            waiting = (
                step for step in self.queue.store.get_steps(task.id) if step.status == "awaiting_approval"
            )
            pending = pending_approval(task, next(waiting, None))
        return Job.from_task(task, self.queue.store.get_runs(task.id), pending)

    def task(self, who: Principal, task_id: str) -> Task:
        task_id = normalize_id(task_id)
        task = self.queue.store.get_task(task_id)
        if task is None or (who.organization_id is not None and task.organization_id != who.organization_id):
            raise TaskNotFound(task_id)
        return task

    def steps(self, task: Task) -> list[Step]:
        """The step ledger of the task's current firing (model calls and tool calls, in order)."""
        return self.queue.store.get_steps(task.id)

    def schedules(self, who: Principal, page: int) -> list[Task]:
        """One page of schedules, soonest next run first (disabled ones last); an operator bound to an
        organization sees its own only."""
        if who.organization_id is None:
            return self.queue.list_schedules(limit=SCHEDULES_PAGE, offset=page * SCHEDULES_PAGE)
        mine: list[Task] = []
        offset = 0
        while len(mine) < (page + 1) * SCHEDULES_PAGE and (
            batch := self.queue.list_schedules(limit=500, offset=offset)
        ):
            mine.extend(task for task in batch if task.organization_id == who.organization_id)
            offset += len(batch)
        return mine[page * SCHEDULES_PAGE : (page + 1) * SCHEDULES_PAGE]

    def approvals(self, who: Principal, page: int) -> list[PendingApproval]:
        """One page of the tool calls waiting for a decision, the longest waiting first; an operator
        bound to an organization sees its own only."""
        if who.organization_id is None:
            return self.queue.list_approvals(limit=APPROVALS_PAGE, offset=page * APPROVALS_PAGE)
        mine: list[PendingApproval] = []
        offset = 0
        while len(mine) < (page + 1) * APPROVALS_PAGE and (
            batch := self.queue.list_approvals(limit=500, offset=offset)
        ):
            mine.extend(item for item in batch if item.organization_id == who.organization_id)
            offset += len(batch)
        return mine[page * APPROVALS_PAGE : (page + 1) * APPROVALS_PAGE]

    def workers(self, who: Principal) -> list[WorkerInfo]:
        require(who.sees_everything, "workers are shown to operators of every organization only")
        if self.redis is None:
            return []
        return read_workers(self.redis, self.namespace)

    def trace_url(self, trace_id: str | None) -> str | None:
        if not trace_id or self.trace_url_template is None:
            return None
        return self.trace_url_template.replace("{trace_id}", trace_id)

    # --- actions (each one facade call, a compare-and-set) ---------------------

    def retry(self, who: Principal, task_id: str) -> Job:
        require_act(who)
        return self.queue.retry_job(self.task(who, task_id).id)

    def cancel(self, who: Principal, task_id: str) -> Task:
        """``remove_job``: a waiting task is cancelled, a running one asked to stop (and its schedule, if
        any, removed); a finished one is refused here rather than silently left as it is."""
        require_act(who)
        task = self.task(who, task_id)
        if task.status not in CANCELLABLE:
            hint = "only pending, queued, running or approval-awaiting tasks can be cancelled"
            raise InvalidTransition(task.id, task.status.value, TaskStatus.CANCELLED.value, hint)
        self.queue.remove_job(task.id)
        return self.task(who, task.id)

    def decide(self, who: Principal, task_id: str, *, approve: bool, text: str | None) -> Job:
        """Approve (with an optional ``text`` as the note) or reject (``text`` the reason, required) the
        tool call a task waits for, as the operator (``decided_by``: their name)."""
        require_act(who)
        task = self.task(who, task_id)
        if approve:
            return self.queue.approve(task.id, note=text or None, decided_by=who.name)
        return self.queue.reject(task.id, text or "", decided_by=who.name)

    def pause(self, who: Principal) -> None:
        require_act(who)
        self.queue.pause_queue()

    def resume(self, who: Principal) -> None:
        require_act(who)
        self.queue.resume_queue()

    def schedule_action(self, who: Principal, task_id: str, action: str) -> Job:
        require_act(who)
        task = self.task(who, task_id)
        controls: dict[str, Callable[[str], Job]] = {
            "run": self.queue.run_schedule_now,
            "enable": self.queue.enable_schedule,
            "disable": self.queue.disable_schedule,
        }
        return controls[action](task.id)

    def bulk_selection(self, who: Principal, action: str, task_filter: TaskFilter) -> BulkSelection:
        """The tasks a bulk ``action`` (retry or cancel) would touch: those matching ``task_filter`` in the
        statuses the action takes, newest first, at most :data:`MAX_BULK`."""
        require_act(who)
        statuses = bulk_statuses(action, task_filter)
        ids: list[str] = []
        more = False
        for status in statuses:
            after = None
            while True:
                page = self.queue.list_tasks(replace(task_filter, status=status), limit=500, after=after)
                ids.extend(item.id for item in page.items)
                if len(ids) > MAX_BULK:
                    return BulkSelection(action, ids[:MAX_BULK], True)
                if page.older is None:
                    break
                after = page.older
        return BulkSelection(action, ids, more)

    def bulk(self, who: Principal, selection: BulkSelection) -> list[tuple[str, str]]:
        """Do ``selection``'s action task by task; returns ``(task id, outcome)`` pairs: ``ok``, or the
        reason a task was left alone (another operator or a worker changed it meanwhile)."""
        require_act(who)
        action = self.retry if selection.action == "retry" else self.cancel
        outcomes = []
        for task_id in selection.task_ids:
            try:
                action(who, task_id)
                outcomes.append((task_id, "ok"))
            except AgentQueueError as exc:
                outcomes.append((task_id, str(exc)))
        return outcomes


@dataclass(frozen=True)
class SpendRow:
    organization_id: str
    today: Decimal
    month: Decimal
    #: The organization's monthly cap (``AGENTQ_MONTHLY_BUDGET_USD`` / ``AGENTQ_ORG_BUDGETS_JSON``), if any.
    cap: Decimal | None

    @property
    def share(self) -> float | None:
        """How much of the cap this month's spend uses (0 to 1 and beyond), if there is a cap."""
        return float(self.month / self.cap) if self.cap else None


@dataclass(frozen=True)
class OverviewView:
    overview: Overview
    paused: bool
    spend: list[SpendRow]

    @property
    def failure_rate(self) -> float | None:
        """Failed tasks among those that finished in the last hour (``None``: none finished)."""
        done = self.overview.completed_last_hour + self.overview.failed_last_hour
        return self.overview.failed_last_hour / done if done else None

    def count(self, name: str) -> int:
        counts = self.overview.counts
        return {"active": counts.get("running", 0)}.get(name, counts.get(name, 0))


@dataclass(frozen=True)
class BulkSelection:
    action: str
    task_ids: list[str]
    #: More tasks match than :data:`MAX_BULK`: the action takes the newest ones.
    more: bool


def bulk_statuses(action: str, task_filter: TaskFilter) -> list[TaskStatus]:
    """The statuses a bulk action takes within ``task_filter`` (its status, if it names one it takes).

    Raises:
        Forbidden: An unknown action.
        InvalidArgument: The filter's status is one the action cannot change.
    """
    from actors.errors import InvalidArgument

    takes = {"retry": (TaskStatus.FAILED,), "cancel": CANCELLABLE}.get(action)
    if takes is None:
        raise Forbidden(f"no bulk action {action!r}; there are retry and cancel")
    if task_filter.status is None:
        return list(takes)
    if task_filter.status not in takes:
        names = ", ".join(status.value for status in takes)
        raise InvalidArgument(f"bulk {action} takes tasks that are {names}, not {task_filter.status.value}")
    return [task_filter.status]


def decide_of(dashboard: Dashboard, action: str) -> Callable[[Principal, str, str | None], Job]:
    """``approve`` or ``reject`` as a call ``(operator, task id, note or reason)``."""
    approve = action == "approve"

    def decide(who: Principal, task_id: str, text: str | None) -> Job:
        return dashboard.decide(who, task_id, approve=approve, text=text)

    return decide


def require(condition: bool, reason: str) -> None:
    if not condition:
        raise Forbidden(reason)


def require_act(who: Principal) -> None:
    require(who.can_act, "this token is read-only: actions need AGENTQ_DASHBOARD_TOKEN")


def describe_filter(task_filter: TaskFilter) -> str:
    """A filter as one line of the audit log (``status=failed kind=general``)."""
    parts = []
    for name in TaskFilter.__dataclass_fields__:
        value: Any = getattr(task_filter, name)
        if value is not None:
            parts.append(f"{name}={getattr(value, 'value', value)}")
    return " ".join(parts) or "all"
