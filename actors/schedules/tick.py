"""Firing per-task cron schedules: the Periodiq tick and the dispatcher it runs.

``periodiq actors`` sends :func:`schedule_tick` once a minute; a worker runs it,
and it enqueues every scheduled task whose ``next_run_at`` has come. Schedules live
in the database, so adding, changing or removing one needs no restart.

* **Once per slot, even with several schedulers**: each firing is a
  compare-and-set on ``next_run_at``, so when two ``periodiq actors`` tick the same
  minute, one of them fires each schedule and the other finds nothing to do.
* **After downtime, a missed firing runs once**: the next ``next_run_at`` is the
  first slot after *now*, not after the missed one, so missed slots collapse.
* **No overlap**: a firing while the previous run is still queued or running is
  skipped (logged); the schedule just moves on to its next slot.
* **One bad row never stops a tick**: see :func:`dispatch_due_schedules`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import dramatiq
from periodiq import cron

from actors.app import runtime
from actors.schedules.cron import ScheduleError, parse_schedule
from config.errors import AgentQueueError
from middleware.events import NO_EVENTS, EventSink, EventType
from middleware.reconciler import agent_queues, fail_unrunnable, unrunnable
from middleware.task_lifecycle import send_queued
from taskstore import DueSchedule, FiredSchedule, Firing, TaskStore, utcnow

logger = logging.getLogger("agentq.lifecycle")

#: Schedules read and fired per database round trip.
BATCH_SIZE = 1000
#: Queue of the tick, apart from agent tasks so a backlog never delays it.
SCHEDULER_QUEUE = "agentq_scheduler"


@dataclass(frozen=True)
class DispatchReport:
    """What one tick did."""

    started: int = 0
    skipped: int = 0
    disabled: int = 0
    #: Fired tasks nothing can run (agent gone, kind without an actor): failed, not enqueued.
    failed: int = 0


def dispatch_due_schedules(
    store: TaskStore,
    broker: dramatiq.Broker,
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    events: EventSink = NO_EVENTS,
) -> DispatchReport:
    """Fire every schedule due at ``now`` (default: the current time); see the module docstring.

    A firing publishes ``queued`` (before its message is sent), a task failed here ``failed``.

    Each schedule is handled on its own, so one bad row never stops a tick:

    * an unusable cron expression or time zone (written to the table directly) disables the schedule
      (it cannot say when to fire next) and fails the task with an error naming the bad value, unless
      the task is running (then the error is only logged: failing it would cut its run short);
    * a fired task whose agent is gone or whose kind has no actor is failed with an error naming the
      kind; its schedule stays, so it fires (and fails) again at its next slot until the agent is fixed;
    * a fired task whose message cannot be sent (other than Redis being down) stays ``queued``, and
      the reconciler sends it later.
    """
    now = now or utcnow()
    kinds = agent_queues(broker)
    counts = Counter[str]()
    while due := store.due_schedules(now=now, limit=batch_size):
        firings = [firing for item in due if (firing := _firing(store, item, now, events)) is not None]
        counts["disabled"] += len(due) - len(firings)
        batch = store.fire_schedules(firings, now=now)
        events.publish_many(
            [
                (
                    fired.task_id,
                    EventType.QUEUED,
                    {"priority": fired.priority, "delay_ms": 0, "by": "schedule"},
                )
                for fired in batch
                if fired.started and unrunnable(fired.kind, kinds) is None
            ]
        )
        events.flush()  # before the messages, whose attempts publish ``running``
        for fired in batch:
            counts[_dispatch(store, broker, fired, kinds, now, events)] += 1
        if len(due) < batch_size:
            break
    return DispatchReport(counts["started"], counts["skipped"], counts["disabled"], counts["failed"])


def _firing(store: TaskStore, item: DueSchedule, now: datetime, events: EventSink) -> Firing | None:
    """The firing of a due schedule, or ``None`` once an unusable one is disabled (and its task failed)."""
    try:
        next_run = parse_schedule(item.cron, item.timezone).next_after(now)
    except ScheduleError as exc:
        store.clear_schedule(item.task_id, now=now)
        error = f"task {item.task_id} cannot run: its schedule is disabled: {exc}"
        failed = store.fail_unrunnable(item.task_id, error=error, now=now, idle_too=True) is not None
        if failed:
            events.publish(item.task_id, EventType.FAILED, {"error": error})
        logger.error("[AgentTaskQueue] %s%s", error, "" if failed else " (the task keeps its status)")
        return None
    return Firing(item.task_id, item.next_run_at, next_run)


def _dispatch(
    store: TaskStore,
    broker: dramatiq.Broker,
    fired: FiredSchedule,
    kinds: Collection[str],
    now: datetime,
    events: EventSink,
) -> str:
    """Send a fired task's message; returns what happened: started, skipped, failed or unsent."""
    if not fired.started:
        logger.info("Scheduled task %s is still queued or running; this firing is skipped", fired.task_id)
        return "skipped"
    problem = unrunnable(fired.kind, kinds)
    if problem is not None:
        fail_unrunnable(store, fired.task_id, problem, now=now, events=events)
        return "failed"
    assert fired.kind is not None
    try:
        send_queued(
            broker, fired.kind, fired.task_id, priority=fired.priority, organization_id=fired.organization_id
        )
    except AgentQueueError as exc:
        logger.error(
            "[AgentTaskQueue] Scheduled task %s not enqueued (the reconciler will): %s", fired.task_id, exc
        )
        return "unsent"
    logger.info(
        "[AgentTaskQueue] Task %s added to queue (priority: %s, delay: 0ms)", fired.task_id, fired.priority
    )
    return "started"


@dramatiq.actor(
    actor_name="agentq_schedule_tick",
    queue_name=SCHEDULER_QUEUE,
    periodic=cron("* * * * *"),
    max_retries=0,
    time_limit=55_000,
    broker=runtime.broker,
)
def schedule_tick() -> None:
    """Periodiq's minute tick: enqueue the scheduled tasks that are due."""
    report = dispatch_due_schedules(runtime.store, runtime.broker, events=runtime.events)
    if report.started or report.skipped or report.disabled or report.failed:
        logger.info(
            "Schedule tick: %s started, %s skipped, %s disabled, %s failed",
            report.started,
            report.skipped,
            report.disabled,
            report.failed,
        )
