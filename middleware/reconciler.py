"""Finds tasks whose message is gone and enqueues them again, exactly once.

See docs/architecture.md, *The status machine*.

The database is the source of truth and Redis only transport, so one worker at a
time (elected through a short-lived Redis key) compares the two every
``AGENTQ_RECONCILE_INTERVAL_MS``:

* Dramatiq's maintenance is forced on every agent queue, so messages held by a
  dead worker go back to their queue now rather than on a random broker call.
* ``pending`` ad-hoc tasks older than ``AGENTQ_PENDING_GRACE_MS`` — their producer
  crashed between the insert and ``add_task``, or Redis was down — are enqueued
  through the normal ``pending → queued`` path.
* ``queued`` tasks, queued for longer than one interval, with no message left in
  Redis (restarted without persistence, flushed, failed over) get a new one. The
  winner of a compare-and-set on ``queued_at`` sends it, so two reconcilers never
  both do; and a duplicate message could only ever be skipped by the claim.
* A task nothing can run — its agent is gone, or its kind has no actor in this
  deployment — is failed with an error naming the task and the kind, once, and the
  pass goes on with the others.
* A task that waited in ``awaiting_approval`` longer than ``AGENTQ_APPROVAL_TIMEOUT_S`` is
  failed with "approval timed out" (compare-and-set: a decision taken meanwhile wins), one
  task at a time: a row that cannot be expired is logged and the pass goes on.

``running`` tasks of dead workers are the stalled-job detector's (``StalledJobs``).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import BrokerConnectionError
from redis import RedisError

from config.errors import AgentQueueError, short_repr
from middleware.agent_messages import AGENT_KIND_OPTION
from middleware.attempts import process_worker_id
from middleware.events import NO_EVENTS, EventSink, EventType
from middleware.redis_messages import requeue_dead_workers, task_ids_in_flight
from middleware.task_lifecycle import send_queued
from taskstore import StoreUnavailable, TaskStore, WaitingTask, utcnow
from taskstore.rules import APPROVAL_TIMED_OUT

logger = logging.getLogger("agentq.lifecycle")

#: Redis key (under the broker's namespace) held by the worker currently reconciling.
LEADER_KEY = "reconciler-leader"


@dataclass(frozen=True)
class ReconcileReport:
    """What one pass did."""

    enqueued_pending: int = 0
    resent_queued: int = 0
    #: Tasks failed because nothing can run them (agent gone, kind without an actor).
    failed_unrunnable: int = 0
    #: Tasks failed because they waited for an approval longer than ``AGENTQ_APPROVAL_TIMEOUT_S``.
    expired_approvals: int = 0


#: Most waits one pass expires (the next pass takes the rest).
EXPIRE_BATCH = 500


class Reconciler(dramatiq.Middleware):
    """Periodically re-enqueues tasks whose message was lost; one worker at a time."""

    def __init__(
        self,
        store: TaskStore,
        *,
        interval_ms: int = 30_000,
        pending_grace_ms: int = 60_000,
        approval_timeout_s: int = 604_800,
        clock: Callable[[], datetime] = utcnow,
        worker_id: Callable[[], str] = process_worker_id,
        events: EventSink = NO_EVENTS,
    ) -> None:
        self.store = store
        self.events = events
        self.interval_s = interval_ms / 1000
        self.pending_grace = timedelta(milliseconds=pending_grace_ms)
        self.approval_timeout = timedelta(seconds=approval_timeout_s)
        self.clock = clock
        self.worker_id = worker_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(broker,), name="agentq-reconciler", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _run(self, broker: dramatiq.Broker) -> None:
        while not self._stop.wait(self.interval_s * random.uniform(0.9, 1.1)):
            try:
                if self._lead(broker):
                    self.reconcile(broker)
            except StoreUnavailable as exc:
                logger.warning("Reconciliation skipped: %s", exc)
            except Exception:
                logger.exception("Reconciliation failed")

    def _lead(self, broker: dramatiq.Broker) -> bool:
        """Take or keep the leader key; only its holder reconciles."""
        if not isinstance(broker, RedisBroker):
            return True
        key, me, ttl_ms = f"{broker.namespace}:{LEADER_KEY}", self.worker_id(), int(self.interval_s * 2000)
        if broker.client.set(key, me, nx=True, px=ttl_ms):
            return True
        holder = broker.client.get(key)
        if holder is not None and (holder.decode() if isinstance(holder, bytes) else holder) == me:
            broker.client.pexpire(key, ttl_ms)
            return True
        return False

    def reconcile(self, broker: dramatiq.Broker) -> ReconcileReport:
        """One pass: requeue dead workers' messages, enqueue forgotten pending tasks, resend lost messages,
        fail waits for an approval that timed out.

        Each task is handled on its own: one that nothing can run (its agent is gone or its kind has no
        actor here) is failed with an error naming it, and the pass goes on. An unreachable store or
        Redis ends the pass (every other task would fail the same way); the next pass tries again.
        """
        queues = agent_queues(broker)
        if isinstance(broker, RedisBroker):
            requeue_dead_workers(broker, queues.values())
        now = self.clock()
        pending = failed = 0
        if self.pending_grace:
            for task in self.store.find_pending(created_before=now - self.pending_grace):
                sent = self._each(broker, task, queues, self._enqueue_pending)
                pending, failed = pending + (sent > 0), failed + (sent < 0)
        resent = 0
        stale = self.store.find_queued(queued_before=now - timedelta(seconds=self.interval_s))
        if stale and isinstance(broker, RedisBroker):
            in_flight = task_ids_in_flight(broker, set(queues.values()))
            for task in stale:
                if task.task_id not in in_flight:
                    sent = self._each(broker, task, queues, self._resend)
                    resent, failed = resent + (sent > 0), failed + (sent < 0)
        return ReconcileReport(pending, resent, failed, self.expire_approvals(now))

    def expire_approvals(self, now: datetime) -> int:
        """Fail the tasks waiting for an approval since before ``now - AGENTQ_APPROVAL_TIMEOUT_S``; returns
        how many. Each is its own compare-and-set (a decision taken meanwhile wins); one that cannot be
        expired is logged and the others still are."""
        before = now - self.approval_timeout
        expired = 0
        for waiting in self.store.list_approvals(limit=EXPIRE_BATCH, waiting_before=before):
            tool = waiting.step.name if waiting.step is not None else "unknown"
            seconds = int(self.approval_timeout.total_seconds())
            error = f"{APPROVAL_TIMED_OUT}: no decision on tool {short_repr(tool)} within {seconds} s"
            try:
                task = self.store.expire_approval(
                    waiting.task.id, waiting_before=before, error=error, now=self.clock()
                )
            except StoreUnavailable:
                raise
            except Exception:
                logger.exception(
                    "[AgentTaskQueue] Expiring the wait of job %s failed; the pass goes on", waiting.task.id
                )
                continue
            if task is not None:
                expired += 1
                logger.error("[AgentTaskQueue] ✗ Job %s failed: %s", task.id, error)
                self.events.publish(task.id, EventType.FAILED, {"error": error})
        return expired

    def _each(
        self,
        broker: dramatiq.Broker,
        task: WaitingTask,
        queues: Mapping[str, str],
        send: Callable[[dramatiq.Broker, WaitingTask, str], int],
    ) -> int:
        """``send`` one task if it can run: 1 if sent, 0 if not, -1 if failed as unrunnable."""
        problem = unrunnable(task.kind, queues)
        if problem is not None:
            failed = fail_unrunnable(self.store, task.task_id, problem, now=self.clock(), events=self.events)
            return -1 if failed else 0
        assert task.kind is not None
        try:
            return send(broker, task, task.kind)
        except (StoreUnavailable, BrokerConnectionError, RedisError):
            raise
        except Exception:
            logger.exception("[AgentTaskQueue] Reconciling job %s failed; the pass goes on", task.task_id)
            return 0

    def _enqueue_pending(self, broker: dramatiq.Broker, task: WaitingTask, kind: str) -> int:
        logger.warning(
            "[AgentTaskQueue] Job %s was left pending by its producer; enqueueing it", task.task_id
        )
        try:
            broker.get_actor(kind).send(task.task_id)
        except AgentQueueError as exc:  # enqueued or cancelled meanwhile
            logger.info("Pending job %s not enqueued: %s", task.task_id, exc)
            return 0
        return 1

    def _resend(self, broker: dramatiq.Broker, task: WaitingTask, kind: str) -> int:
        if not self.store.touch_queued(task.task_id, queued_at=task.since, now=self.clock()):
            return 0
        logger.warning("[AgentTaskQueue] Job %s lost its message; re-enqueued", task.task_id)
        send_queued(broker, kind, task.task_id)
        return 1


def unrunnable(kind: str | None, kinds: Collection[str]) -> str | None:
    """Why a task whose agent has ``kind`` (``None``: the agent is gone) cannot run here, or ``None``."""
    if kind is None:
        return "its agent no longer exists"
    if kind not in kinds:
        return (
            f"agent kind {short_repr(kind)} has no actor (known kinds: {', '.join(sorted(kinds)) or 'none'})"
        )
    return None


def fail_unrunnable(
    store: TaskStore,
    task_id: str,
    problem: str,
    *,
    now: datetime,
    idle_too: bool = False,
    events: EventSink = NO_EVENTS,
) -> bool:
    """Fail ``task_id`` with an error naming it and ``problem``, logged once (and a ``failed`` event).

    ``False`` if it was no longer in a status to fail (it moved on meanwhile)."""
    error = f"task {task_id} cannot run: {problem}"
    if store.fail_unrunnable(task_id, error=error, now=now, idle_too=idle_too) is None:
        return False
    logger.error("[AgentTaskQueue] ✗ Job %s failed: %s", task_id, error)
    events.publish(task_id, EventType.FAILED, {"error": error})
    return True


def agent_queues(broker: dramatiq.Broker) -> dict[str, str]:
    """Agent kind → queue name, for every agent actor declared on ``broker``."""
    queues = {}
    for name in broker.get_declared_actors():
        actor = broker.get_actor(name)
        kind = actor.options.get(AGENT_KIND_OPTION)
        if isinstance(kind, str):
            queues[kind] = actor.queue_name
    return queues
