"""Leases for running tasks, and recovery of tasks whose worker died (docs/architecture.md, *Failure paths*).

Every worker process runs one background thread that

* renews the lease of every attempt it holds in memory (never merely every row stored under
  its worker id), every third of ``AGENTQ_STALLED_INTERVAL_MS``
  (one UPDATE for all of them). A task missing from the renewal was taken over
  elsewhere: its attempt is flagged ``lost`` so the agent stops at its next step;
* looks for running tasks whose lease expired — their worker was killed, ran out of
  memory, lost its machine, or was cut off at shutdown — every half interval, and
  recovers each exactly once (compare-and-set): logged as
  ``⚠ Job <id> stalled - worker may have crashed``, ``stalled_count`` grows, and the
  task is re-queued with a fresh message, or failed with "job stalled more than
  allowable limit" past ``AGENTQ_MAX_STALLED_COUNT``.

It does not rely on Dramatiq's probabilistic queue maintenance: detection takes at
most one lease plus half an interval, whatever the traffic. A recovered task's live event is
``retrying`` (``"reason": "stalled"``), or ``failed`` past the limit.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import dramatiq

from middleware.attempts import AttemptRegistry
from middleware.events import NO_EVENTS, EventSink, EventType
from middleware.task_lifecycle import send_queued
from taskstore import StalledTask, StoreUnavailable, TaskStore, utcnow

logger = logging.getLogger("agentq.lifecycle")


class StalledJobs(dramatiq.Middleware):
    """Renews this worker's leases and recovers tasks whose lease expired."""

    def __init__(
        self,
        store: TaskStore,
        attempts: AttemptRegistry,
        *,
        interval_ms: int = 30_000,
        max_stalled_count: int = 1,
        clock: Callable[[], datetime] = utcnow,
        events: EventSink = NO_EVENTS,
    ) -> None:
        self.store = store
        self.attempts = attempts
        self.events = events
        self.interval_s = interval_ms / 1000
        self.max_stalled_count = max_stalled_count
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(broker,), name="agentq-leases", daemon=True)
        self._thread.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, broker: dramatiq.Broker) -> None:
        renew_every = self.interval_s / 3
        next_check = 0.0
        elapsed = 0.0
        while not self._stop.wait(renew_every):
            elapsed += renew_every
            try:
                self.renew()
                if elapsed >= next_check:
                    self.recover(broker)
                    next_check = elapsed + self.interval_s / 2 * random.uniform(0.8, 1.2)
            except StoreUnavailable as exc:
                logger.warning("Lease upkeep skipped: %s", exc)
            except Exception:
                logger.exception("Lease upkeep failed")

    def renew(self) -> None:
        """Extend the leases of the attempts this process holds; flag those taken over elsewhere."""
        attempts = self.attempts.held()
        if not attempts:
            return
        now = self.clock()
        renewed = self.store.renew_leases(
            [(attempt.task_id, attempt.claim.run_id) for attempt in attempts],
            lease_until=now + timedelta(seconds=self.interval_s),
            now=now,
        )
        for attempt in self.attempts.mark_lost(attempts, set(renewed)):
            logger.warning("[AgentTaskQueue] Job %s lost its lease; stopping its run", attempt.task_id)

    def recover(self, broker: dramatiq.Broker) -> list[StalledTask]:
        """Recover every task whose lease expired; returns what was recovered."""
        recovered = self.store.recover_stalled(max_stalled_count=self.max_stalled_count, now=self.clock())
        for task in recovered:
            logger.warning("[AgentTaskQueue] ⚠ Job %s stalled - worker may have crashed", task.task_id)
            self._publish(task)
            if task.requeued:
                self._resend(broker, task)
            else:
                logger.error(
                    "[AgentTaskQueue] ✗ Job %s failed: job stalled more than allowable limit", task.task_id
                )
                logger.warning(
                    "[AgentTaskQueue] ⚠ Job %s moved to dead letter queue after %s attempts",
                    task.task_id,
                    task.attempts,
                )
        return recovered

    def _publish(self, task: StalledTask) -> None:
        data = {"reason": "stalled", "stalled_count": task.stalled_count, "attempt": task.attempts}
        if task.requeued:
            self.events.publish(task.task_id, EventType.RETRYING, {**data, "delay_ms": 0})
            self.events.flush()  # before the new message, whose attempt publishes ``running``
        else:
            self.events.publish(
                task.task_id, EventType.FAILED, {**data, "error": "job stalled more than allowable limit"}
            )

    @staticmethod
    def _resend(broker: dramatiq.Broker, task: StalledTask) -> None:
        if task.kind is None:
            logger.error("Stalled job %s has no agent any more; it stays queued", task.task_id)
            return
        try:
            send_queued(broker, task.kind, task.task_id)
        except Exception:
            # The reconciler finds queued tasks without a message and sends one later.
            logger.exception("Could not re-enqueue stalled job %s", task.task_id)
