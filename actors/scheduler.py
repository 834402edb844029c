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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import dramatiq
from periodiq import cron

from actors.app import runtime
from actors.cron import ScheduleError, parse_schedule
from middleware.task_lifecycle import send_queued
from taskstore import Firing, TaskStore, utcnow

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


def dispatch_due_schedules(
    store: TaskStore, broker: dramatiq.Broker, *, now: datetime | None = None, batch_size: int = BATCH_SIZE
) -> DispatchReport:
    """Fire every schedule due at ``now`` (default: the current time); see the module docstring."""
    now = now or utcnow()
    started = skipped = disabled = 0
    while due := store.due_schedules(now=now, limit=batch_size):
        firings = []
        for item in due:
            try:
                schedule = parse_schedule(item.cron, item.timezone)
            except ScheduleError as exc:
                logger.error("[AgentTaskQueue] Schedule of task %s disabled: %s", item.task_id, exc)
                store.clear_schedule(item.task_id, now=now)
                disabled += 1
                continue
            firings.append(Firing(item.task_id, item.next_run_at, schedule.next_after(now)))
        for fired in store.fire_schedules(firings, now=now):
            if not fired.started:
                skipped += 1
                logger.info(
                    "Scheduled task %s is still queued or running; this firing is skipped", fired.task_id
                )
            elif fired.kind is None:
                logger.error("[AgentTaskQueue] Scheduled task %s has no agent; not enqueued", fired.task_id)
            else:
                send_queued(
                    broker,
                    fired.kind,
                    fired.task_id,
                    priority=fired.priority,
                    organization_id=fired.organization_id,
                )
                started += 1
                logger.info(
                    "[AgentTaskQueue] Task %s added to queue (priority: %s, delay: 0ms)",
                    fired.task_id,
                    fired.priority,
                )
        if len(due) < batch_size:
            break
    return DispatchReport(started, skipped, disabled)


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
    report = dispatch_due_schedules(runtime.store, runtime.broker)
    if report.started or report.skipped or report.disabled:
        logger.info(
            "Schedule tick: %s started, %s skipped, %s disabled",
            report.started,
            report.skipped,
            report.disabled,
        )
