"""Keeps ``ai_agent_tasks.status`` true while messages move (DESIGN §5).

* ``before_enqueue`` (producer): ``pending → queued`` by compare-and-set, for
  ``add_task`` and for a bare ``actor.send(task_id)`` alike. A send for a task
  that is missing, running or finished is refused before anything reaches Redis.
* ``before_process_message`` (worker): ``queued → running`` by compare-and-set,
  opening a run row. A message whose task is not queued — a duplicate delivery,
  a cancelled or finished task — is skipped, never run.
* ``after_process_message``: ``running → completed`` with the result, or the
  attempt's failure recorded on its run and the task either re-queued with
  exponential backoff (the same message, delayed) or ``failed`` (dead-lettered).

Position: last in the stack, so every middleware that may skip a message (pause,
rate limits) runs its ``before_process_message`` before the claim, and this one's
``after_process_message`` runs first. Dramatiq's ``Retries`` must leave agent
messages alone (``middleware.retries.Retries`` does).
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import MiddlewareError, SkipMessage

from config.errors import AgentQueueError
from middleware.agent_messages import AGENT_KIND_OPTION, agent_kind, message_task_id
from taskstore import (
    Claim,
    InvalidTransition,
    Task,
    TaskNotFound,
    TaskStatus,
    TaskStore,
    Usage,
    new_id,
    normalize_id,
    utcnow,
)

logger = logging.getLogger("agentq.lifecycle")

#: Message option: priority to store with the pending → queued transition (None keeps the row's).
PRIORITY_OPTION = "agentq_priority"
#: Message option: ISO timestamp the producer enqueued at; the transition records it as ``queued_at``.
ENQUEUED_AT_OPTION = "agentq_enqueued_at"
#: Message option: set once the task is queued, so re-enqueues (retries, delayed moves) skip the database.
QUEUED_OPTION = "agentq_queued"


@dataclass
class _Attempt:
    """The claim a worker thread holds, and the outcome its actor reported."""

    claim: Claim
    outcome: AttemptResult | None = None


_current: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar("agentq_attempt", default=None)
#: The task the last enqueue in this thread moved to ``queued`` (read back by ``AgentTaskQueue.add_task``).
_last_queued: contextvars.ContextVar[Task | None] = contextvars.ContextVar("agentq_last_queued", default=None)


class EnqueueRejected(AgentQueueError, MiddlewareError):
    """A send for a task that cannot be queued; ``reason`` is the underlying error."""

    def __init__(self, reason: AgentQueueError) -> None:
        super().__init__(str(reason))
        self.reason = reason


class MissingClaim(AgentQueueError):
    """An agent actor ran without a claimed task: the TaskLifecycle middleware is not installed."""


@dataclass(frozen=True)
class AttemptResult:
    """What an agent kind produces: stored as the task's result, with usage and transcript."""

    result: dict[str, Any]
    usage: Usage = field(default_factory=Usage)
    transcript: list[dict[str, Any]] | None = None


def _attempt(task_id: str) -> _Attempt:
    attempt = _current.get()
    if attempt is None or attempt.claim.task.id != task_id:
        raise MissingClaim(f"no claim for task {task_id!r}: is middleware.TaskLifecycle on the broker?")
    return attempt


def current_claim(task_id: str) -> Claim:
    """The claim the worker holds for ``task_id`` in this thread."""
    return _attempt(task_id).claim


def take_queued(task_id: str) -> Task | None:
    """The row that this thread's last send moved to ``queued``, if it was ``task_id``; cleared on read."""
    task = _last_queued.get()
    _last_queued.set(None)
    return task if task is not None and task.id == task_id else None


def report_outcome(task_id: str, outcome: AttemptResult) -> None:
    """Hand the attempt's result to ``TaskLifecycle``, which stores it when the actor returns."""
    _attempt(task_id).outcome = outcome


def backoff_ms(attempt: int, base_ms: int) -> int:
    """Delay before the attempt after ``attempt``: ``base * 2**(attempt-1)`` (2 s, 4 s, 8 s … for 2 s)."""
    return int(base_ms * 2 ** max(attempt - 1, 0))


def is_retryable(exception: BaseException) -> bool:
    """Errors declare ``retryable``; anything else (timeouts, crashes in tools) is worth another attempt."""
    retryable = getattr(exception, "retryable", True)
    return retryable if isinstance(retryable, bool) else True


def describe(exception: BaseException) -> str:
    """The failure message stored and logged for ``exception``."""
    text = str(exception).strip()
    return text if text else type(exception).__name__


class TaskLifecycle(dramatiq.Middleware):
    """Drives the task lifecycle in the :class:`~taskstore.TaskStore` from Dramatiq's hooks."""

    def __init__(
        self,
        store: TaskStore,
        *,
        backoff_ms: int = 2000,
        clock: Callable[[], datetime] = utcnow,
        worker_id: Callable[[], str] | None = None,
    ) -> None:
        self.store = store
        self.backoff_ms = backoff_ms
        self.clock = clock
        self.worker_id = worker_id or _process_worker_id
        self._attempts: dict[str, _Attempt] = {}
        self._lock = threading.Lock()

    @property
    def actor_options(self) -> set[str]:
        return {AGENT_KIND_OPTION}

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Size the store's connections to the worker's threads (``--threads`` may exceed the setting)."""
        self.store.reserve_connections(worker.worker_threads)

    # --- producer side ------------------------------------------------------

    def before_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        if message.options.get(QUEUED_OPTION) or agent_kind(broker, message) is None:
            return
        try:
            self._mark_queued(message, delay or 0)
        except AgentQueueError as exc:
            raise EnqueueRejected(exc) from exc
        message.options[QUEUED_OPTION] = True

    def _mark_queued(self, message: dramatiq.Message[Any], delay_ms: int) -> None:
        task_id = normalize_id(message_task_id(message))
        stamp = message.options.get(ENQUEUED_AT_OPTION)
        now = datetime.fromisoformat(stamp) if isinstance(stamp, str) else self.clock()
        priority = message.options.get(PRIORITY_OPTION)
        task = self.store.mark_queued(
            task_id, priority=priority, run_at=now + timedelta(milliseconds=delay_ms), now=now
        )
        _last_queued.set(task)
        if task is not None:
            logger.info(
                "[AgentTaskQueue] Task %s added to queue (priority: %s, delay: %sms)",
                task_id,
                task.priority,
                delay_ms,
            )
            return
        current = self.store.get_task(task_id)
        if current is None:
            raise TaskNotFound(task_id)
        if current.status != TaskStatus.QUEUED:
            hint = "use retry_job for a failed task" if current.status == TaskStatus.FAILED else ""
            raise InvalidTransition(task_id, current.status.value, TaskStatus.QUEUED.value, hint)
        # Already queued: a duplicate send. Harmless: only one message can claim the task.
        logger.debug("Task %s is already queued; sending another message for it", task_id)

    # --- worker side --------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if agent_kind(broker, message) is None:
            return
        raw_id = message_task_id(message)
        try:
            task_id = normalize_id(raw_id)
        except AgentQueueError as exc:
            logger.error("[AgentTaskQueue] Dropping message %s: %s", message.message_id, exc)
            raise SkipMessage(str(exc)) from exc
        claim = self.store.claim(task_id, run_id=new_id(), worker_id=self.worker_id(), now=self.clock())
        if claim is None:
            task = self.store.get_task(task_id)
            if task is None:
                logger.warning(
                    "[AgentTaskQueue] Skipping message for task %s: the task no longer exists", task_id
                )
            else:
                logger.info("Skipping message for task %s: it is %s, not queued", task_id, task.status.value)
            raise SkipMessage(f"task {task_id} is not queued")
        attempt = _Attempt(claim)
        with self._lock:
            self._attempts[message.message_id] = attempt
        _current.set(attempt)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._release(message)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        attempt = self._release(message)
        if attempt is None:
            return
        if exception is None:
            outcome = attempt.outcome or AttemptResult(result=_as_result(result))
            self._complete(attempt.claim, outcome)
        else:
            self._fail(broker, message, attempt.claim, exception)

    def _release(self, message: MessageProxy) -> _Attempt | None:
        _current.set(None)
        with self._lock:
            return self._attempts.pop(message.message_id, None)

    def _complete(self, claim: Claim, outcome: AttemptResult) -> None:
        done = self.store.complete(
            claim.task.id,
            claim.run_id,
            result=outcome.result,
            usage=outcome.usage,
            transcript=outcome.transcript,
            now=self.clock(),
        )
        if done:
            logger.info("[AgentTaskQueue] ✓ Job %s completed", claim.task.id)
        else:
            logger.warning(
                "[AgentTaskQueue] Job %s finished but no longer held by run %s", claim.task.id, claim.run_id
            )

    def _fail(
        self, broker: dramatiq.Broker, message: MessageProxy, claim: Claim, exception: BaseException
    ) -> None:
        task = claim.task
        error = describe(exception)
        max_attempts = self._max_attempts(broker, message, claim)
        retry = is_retryable(exception) and task.attempts < max_attempts
        delay_ms = backoff_ms(task.attempts, self.backoff_ms) if retry else 0
        now = self.clock()
        recorded = self.store.fail_attempt(
            task.id,
            claim.run_id,
            error=error,
            stacktrace="".join(traceback.format_exception(exception)),
            usage=_usage_of(exception),
            transcript=getattr(exception, "transcript", None),
            retry_at=now + timedelta(milliseconds=delay_ms) if retry else None,
            now=now,
        )
        if not recorded:
            logger.warning(
                "[AgentTaskQueue] Job %s failed but is no longer held by run %s", task.id, claim.run_id
            )
            return
        logger.error("[AgentTaskQueue] ✗ Job %s failed: %s", task.id, error)
        if retry:
            logger.info(
                "Retrying job %s in %sms (attempt %s of %s)",
                task.id,
                delay_ms,
                task.attempts + 1,
                max_attempts,
            )
            broker.enqueue(message.copy(options={QUEUED_OPTION: True}), delay=delay_ms)
        else:
            logger.warning(
                "[AgentTaskQueue] ⚠ Job %s moved to dead letter queue after %s attempts",
                task.id,
                task.attempts,
            )

    @staticmethod
    def _max_attempts(broker: dramatiq.Broker, message: MessageProxy, claim: Claim) -> int:
        """The task's ``max_attempts``, capped by the actor's ``max_retries`` + 1 when it sets one."""
        retries = broker.get_actor(message.actor_name).options.get("max_retries")
        if isinstance(retries, int):
            return min(claim.task.max_attempts, retries + 1)
        return claim.task.max_attempts


def _process_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def _as_result(value: Any) -> dict[str, Any]:
    if isinstance(value, AttemptResult):
        return value.result
    if isinstance(value, dict):
        return value
    return {"output": value}


def _usage_of(exception: BaseException) -> Usage:
    usage = getattr(exception, "usage", None)
    if isinstance(usage, Usage):
        return usage
    return Usage()
