"""Keeps ``ai_agent_tasks.status`` true while messages move (docs/architecture.md, *The status machine*).

* ``before_enqueue`` (producer): for a bare ``actor.send(task_id)``, ``pending → queued`` by
  compare-and-set; a send for a task that is missing, running or finished is refused before
  anything reaches Redis. ``AgentTaskQueue`` does that transition itself and sends messages
  marked :data:`QUEUED_OPTION` (see :func:`queued_options`), which only get their lane here.
* ``before_process_message`` (worker): ``queued → running`` by compare-and-set,
  opening a run row and leasing the task to this worker process. A message whose
  task is not queued — a duplicate delivery, a cancelled or finished task — is
  skipped, never run. A claim that finds the database unreachable puts the message
  back (2 to 4 s) without using an attempt.
* ``after_process_message``: ``running → completed`` with the :class:`AttemptResult` the
  actor returned (Dramatiq passes it as ``result``); or, per
  :mod:`middleware.failure_policy`, re-queued with backoff (the same message,
  delayed), postponed without using the attempt, left ``awaiting_approval`` (a tool call waits for a
  person: no attempt used, no worker held), or ``failed`` (dead-lettered).
  Status writes are retried while the database is unreachable; if it stays down,
  the attempt is released (its lease no longer renewed), so it expires and the
  task is recovered as stalled. A write the store refuses for another reason is
  recorded as a failed attempt whose error says why.

Each transition is also published as a live event (:mod:`middleware.events`): ``queued`` for a bare
send (before its message reaches Redis, so it comes before ``running``), ``running`` after the claim,
then ``completed``, ``retrying``, ``postponed``, ``failed`` or ``cancelled`` once written; before a
retried or postponed task's message is sent again, the events so far are flushed (at most
``ORDERING_WAIT_S``), so the next attempt's ``running`` comes after them.

Position: last in the stack, so every middleware that may skip a message (pause,
rate limits) runs its ``before_process_message`` before the claim, and this one's
``after_process_message`` runs first. Dramatiq's ``Retries`` must leave agent
messages alone (``middleware.retries.Retries`` does).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Interrupt, MiddlewareError, SkipMessage

from config.errors import AgentQueueError
from config.redaction import redact, redact_data, redacted_traceback
from middleware.agent_messages import (
    ADMITTED_AT_OPTION,
    AGENT_KIND_OPTION,
    LANE_OPTION,
    ORG_OPTION,
    agent_kind,
    message_task_id,
    put_back,
)
from middleware.attempts import Attempt, AttemptRegistry, current_claim, process_worker_id
from middleware.events import NO_EVENTS, EventSink, EventType
from middleware.failure_policy import DEFAULT_MAX_POSTPONE_MS, Decision, Outcome, decide, describe
from middleware.in_flight import RunCutOff, RunOnLoop, RunsInFlight
from middleware.lifecycle_events import attempt_end_event, completed_event, queued_event, running_event
from middleware.outcome import AttemptResult, as_attempt_result, transcript_of, usage_of
from orchestrator.errors import AgentRunError
from taskstore import (
    Claim,
    InvalidTransition,
    StoreUnavailable,
    TaskNotFound,
    TaskStatus,
    TaskStore,
    new_id,
    normalize_id,
    utcnow,
)

logger = logging.getLogger("agentq.lifecycle")
T = TypeVar("T")

#: Message option: priority to store with the pending → queued transition (None keeps the row's).
PRIORITY_OPTION = "agentq_priority"
#: Message option of a bare send, never sent: the ``datetime`` the sender chose as ``queued_at`` (so it
#: can undo the transition if Redis refuses the message); ``before_enqueue`` removes it.
ENQUEUED_AT_OPTION = "agentq_enqueued_at"
#: Message option: set once the task is queued, so re-enqueues (retries, delayed moves) skip the database.
QUEUED_OPTION = "agentq_queued"

#: Runs in flight per process when none is configured (``QUEUE_CONCURRENCY`` sets it in a worker).
DEFAULT_RUNS_IN_FLIGHT = 100
#: Base delay before a message held back by its organization's concurrency cap is offered again.
ORG_CAP_RETRY_MS = 500
#: Base delay before a message whose claim found the database unreachable is offered again.
CLAIM_RETRY_MS = 2000
#: Seconds between attempts to write a finished attempt while the database is unreachable.
_STORE_RETRY_DELAYS = (0.2, 0.5, 1, 2, 4, 8, 15)
#: Most characters of a database error quoted in the error stored for the attempt.
_MAX_QUOTED_ERROR = 500


class EnqueueRejected(AgentQueueError, MiddlewareError):
    """A send for a task that cannot be queued; ``reason`` is the underlying error."""

    def __init__(self, reason: AgentQueueError) -> None:
        super().__init__(str(reason))
        self.reason = reason


class ShutdownCutOff(Interrupt):
    """Raised into a worker thread whose task outlived the shutdown deadline (see ``ShutdownDeadline``)."""


class OutcomeNotStored(AgentQueueError):
    """The task store refused (other than by being unreachable) to write how an attempt ended."""

    def __init__(self, task_id: str, error: Exception) -> None:
        text = str(error).strip()
        if len(text) > _MAX_QUOTED_ERROR:
            text = text[:_MAX_QUOTED_ERROR] + "…"
        super().__init__(
            f"the end of this attempt of task {task_id} could not be stored: {type(error).__name__}: {text}"
        )
        self.task_id = task_id


#: The logger of Dramatiq's worker threads, which warns when an actor without ``Results`` returns a value.
DRAMATIQ_WORKER_LOGGER = "dramatiq.worker.WorkerThread"


class AgentResultsKept(logging.Filter):
    """Drops Dramatiq's warning that an agent kind "returned a value that is not None … discarded".

    An agent kind returns its :class:`AttemptResult` on purpose: ``TaskLifecycle`` stores it from
    the ``result`` Dramatiq passes to ``after_process_message``. Other actors keep the warning.
    """

    def __init__(self, broker: dramatiq.Broker) -> None:
        super().__init__()
        self.broker = broker

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.msg
        if not isinstance(text, str) or "returned a value that is not None" not in text:
            return True
        name = text.split("'")[1] if text.count("'") >= 2 else ""
        try:
            actor = self.broker.get_actor(name)
        except dramatiq.errors.ActorNotFound:
            return True
        return AGENT_KIND_OPTION not in actor.options


class ExpectedEndings(logging.Filter):
    """Drops Dramatiq's "Failed to process message … with unhandled exception" error (and its traceback) for
    an attempt that ended as asked: its run waits for a person's approval, or was cancelled.

    Neither is a failure; ``TaskLifecycle`` logs one line for each (``Job <id> awaiting approval …``,
    ``Job <id> cancelled``). Every other exception keeps Dramatiq's error.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, AgentRunError) and (error.awaits_approval or error.cancels_task))


class TaskLifecycle(dramatiq.Middleware):
    """Drives the task lifecycle in the :class:`~taskstore.TaskStore` from Dramatiq's hooks."""

    def __init__(
        self,
        store: TaskStore,
        *,
        backoff_ms: int = 2000,
        lease_ms: int = 30_000,
        max_postpones: int = 20,
        max_postpone_ms: int = DEFAULT_MAX_POSTPONE_MS,
        org_concurrency: int = 0,
        clock: Callable[[], datetime] = utcnow,
        worker_id: Callable[[], str] = process_worker_id,
        attempts: AttemptRegistry | None = None,
        events: EventSink = NO_EVENTS,
        in_flight: RunsInFlight | None = None,
        drain_timeout_s: float = 40.0,
    ) -> None:
        self.store = store
        self.backoff_ms = backoff_ms
        self.lease_ms = lease_ms
        self.max_postpones = max_postpones
        self.max_postpone_ms = max_postpone_ms
        self.org_concurrency = org_concurrency
        self.clock = clock
        self.worker_id = worker_id
        self.attempts = attempts or AttemptRegistry()
        self.events = events
        self.in_flight = in_flight or RunsInFlight(DEFAULT_RUNS_IN_FLIGHT)
        self.drain_timeout_s = drain_timeout_s
        #: Messages whose thread holds a slot of ``in_flight`` (taken before the claim, not handed over yet).
        self._slots: set[str] = set()
        self._slots_lock = threading.Lock()
        self._results_kept: AgentResultsKept | None = None
        self._expected = ExpectedEndings()

    @property
    def actor_options(self) -> set[str]:
        return {AGENT_KIND_OPTION}

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Keep Dramatiq from warning that agent kinds' results are discarded: this stores them."""
        self.in_flight.open()
        self._results_kept = AgentResultsKept(broker)
        logging.getLogger(DRAMATIQ_WORKER_LOGGER).addFilter(self._results_kept)
        logging.getLogger(DRAMATIQ_WORKER_LOGGER).addFilter(self._expected)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Size the store's connections to the worker's threads (``--threads`` may exceed the setting)."""
        self.store.reserve_connections(worker.worker_threads)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.in_flight.close()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Wait for the runs on the event loop (``ShutdownDeadline`` cuts off the ones left at its deadline),
        then stop filtering Dramatiq's log."""
        left = self.in_flight.in_flight
        if left:
            logger.info("Waiting for %s agent run(s) in flight to end", left)
        if not self.in_flight.wait_idle(self.drain_timeout_s):
            logger.warning(
                "[AgentTaskQueue] %s agent run(s) still in flight after %gs; their tasks will be recovered as"
                " stalled",
                self.in_flight.in_flight,
                self.drain_timeout_s,
            )
        self.in_flight.shutdown()
        logging.getLogger(DRAMATIQ_WORKER_LOGGER).removeFilter(self._expected)
        self.events.flush()
        if self._results_kept is not None:
            logging.getLogger(DRAMATIQ_WORKER_LOGGER).removeFilter(self._results_kept)
            self._results_kept = None

    # --- producer side ------------------------------------------------------

    def before_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        if agent_kind(broker, message) is None:
            return
        if message.options.get(QUEUED_OPTION):
            if LANE_OPTION not in message.options:
                self._set_lane_from_store(message)
            return
        try:
            self._mark_queued(message, delay or 0)
        except AgentQueueError as exc:
            raise EnqueueRejected(exc) from exc
        message.options[QUEUED_OPTION] = True

    def _set_lane_from_store(self, message: dramatiq.Message[Any]) -> None:
        """A re-send that does not know the task's lane (stalled recovery, reconciliation): read it."""
        try:
            task = self.store.get_task(normalize_id(message_task_id(message)))
        except AgentQueueError:
            return
        if task is not None:
            set_lane(message.options, task.priority, task.organization_id)

    def _mark_queued(self, message: dramatiq.Message[Any], delay_ms: int) -> None:
        task_id = normalize_id(message_task_id(message))
        stamp = message.options.pop(ENQUEUED_AT_OPTION, None)
        now = stamp if isinstance(stamp, datetime) else self.clock()
        priority = message.options.pop(PRIORITY_OPTION, None)
        task = self.store.mark_queued(
            task_id, priority=priority, run_at=now + timedelta(milliseconds=delay_ms), now=now
        )
        if task is not None:
            set_lane(message.options, task.priority, task.organization_id)
            logger.info(
                "[AgentTaskQueue] Task %s added to queue (priority: %s, delay: %sms)",
                task_id,
                task.priority,
                delay_ms,
            )
            self.events.publish(task_id, EventType.QUEUED, queued_event(task, delay_ms, "send"))
            self.events.flush()
            return
        current = self.store.get_task(task_id)
        if current is None:
            raise TaskNotFound(task_id)
        if current.status != TaskStatus.QUEUED:
            hint = "use retry_job for a failed task" if current.status == TaskStatus.FAILED else ""
            raise InvalidTransition(task_id, current.status.value, TaskStatus.QUEUED.value, hint)
        set_lane(message.options, current.priority, current.organization_id)
        # Already queued: a duplicate send. Harmless: only one message can claim the task.
        logger.debug("Task %s is already queued; sending another message for it", task_id)

    # --- worker side --------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if agent_kind(broker, message) is None:
            return
        on_loop = _runs_on_loop(broker, message)
        if on_loop:
            if not self.in_flight.acquire():  # shutting down while every slot was taken
                put_back(broker, message, delay_ms=0)
                raise SkipMessage("the worker is shutting down")
            with self._slots_lock:
                self._slots.add(message.message_id)
        try:
            self._claim_message(broker, message, on_loop=on_loop)
        except StoreUnavailable as exc:
            # No attempt was counted: offer the message again shortly instead of running it unclaimed.
            delay_ms = CLAIM_RETRY_MS + random.randint(0, CLAIM_RETRY_MS)
            logger.warning(
                "[AgentTaskQueue] Could not claim the task of message %s: task store unavailable (%s);"
                " message put back for %sms",
                message.message_id,
                exc,
                delay_ms,
            )
            put_back(broker, message, delay_ms=delay_ms)
            raise SkipMessage(f"task store unavailable: {exc}") from exc

    def _claim_message(self, broker: dramatiq.Broker, message: MessageProxy, *, on_loop: bool) -> None:
        """Claim the message's task and register the attempt, or raise :class:`SkipMessage`."""
        try:
            task_id = normalize_id(message_task_id(message))
        except AgentQueueError as exc:
            logger.error("[AgentTaskQueue] Dropping message %s: %s", message.message_id, exc)
            raise SkipMessage(str(exc)) from exc
        admitted = message.options.get(ADMITTED_AT_OPTION)
        now = datetime.fromtimestamp(admitted / 1000, UTC) if isinstance(admitted, int) else self.clock()
        claim = self.store.claim(
            task_id,
            run_id=new_id(),
            worker_id=self.worker_id(),
            lease_until=now + timedelta(milliseconds=self.lease_ms),
            now=now,
            max_running_in_org=self.org_concurrency or None,
        )
        if claim is None:
            task = self.store.get_task(task_id)
            if task is not None and task.status == TaskStatus.QUEUED and self.org_concurrency:
                # Its organization runs its maximum: try again shortly, without using an attempt.
                put_back(broker, message, delay_ms=ORG_CAP_RETRY_MS + random.randint(0, ORG_CAP_RETRY_MS))
                raise SkipMessage(f"organization {task.organization_id} at its concurrency cap")
            if task is None:
                logger.warning(
                    "[AgentTaskQueue] Skipping message for task %s: the task no longer exists", task_id
                )
            else:
                logger.info("Skipping message for task %s: it is %s, not queued", task_id, task.status.value)
            raise SkipMessage(f"task {task_id} is not queued")
        attempt = self.attempts.add(message.message_id, claim)
        attempt.on_loop = on_loop
        attempt.passes_result = not RESULT_OPTIONS.isdisjoint(message.options)
        self.events.publish(task_id, EventType.RUNNING, running_event(claim, self.worker_id()))

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self.attempts.pop(message.message_id)
        self._give_slot_back(message.message_id)

    def _give_slot_back(self, message_id: str) -> None:
        with self._slots_lock:
            held = message_id in self._slots
            self._slots.discard(message_id)
        if held:
            self.in_flight.release()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        running = self.attempts.get(message.message_id)
        if running is not None and running.returned is not None:
            result = running.returned  # what the agent kind produced (it returned None to Dramatiq)
        if isinstance(result, RunOnLoop):
            self._hand_off(broker, message, result)
            return
        self._give_slot_back(message.message_id)
        attempt = self.attempts.finishing(message.message_id)
        if attempt is None:
            return
        self._finish(broker, message, attempt, result, exception)

    def _hand_off(self, broker: dramatiq.Broker, message: MessageProxy, run: RunOnLoop) -> None:
        """Start an async kind's run on the event loop with the slot this thread took; Dramatiq then
        acknowledges the message (the task's lease protects the run)."""
        attempt = self.attempts.hand_off(message.message_id)
        if attempt is None:  # not claimed here: nothing to run
            run.discard()
            self._give_slot_back(message.message_id)
            return
        with self._slots_lock:
            self._slots.discard(message.message_id)  # the run gives it back once its end is written

        def finish(result: Any, exception: BaseException | None) -> None:
            self.attempts.loop_run_ended(attempt)
            if exception is not None:  # as Dramatiq logs an actor's error (ExpectedEndings filters the same)
                logging.getLogger(DRAMATIQ_WORKER_LOGGER).error(
                    "Failed to process message %s with unhandled exception.", message, exc_info=exception
                )
            self._finish(broker, message, attempt, result, exception)

        self.in_flight.start(attempt, run, finish)
        self.attempts.handed_off(attempt, run)  # after the start: the run's context keeps the span and scope

    def _finish(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        attempt: Attempt,
        result: Any,
        exception: BaseException | None,
    ) -> None:
        """Write how ``attempt`` ended and tell the observers."""
        try:
            ended = self._end(broker, message, attempt, result, exception)
        finally:
            self.attempts.release(attempt)
        self.attempts.ended(attempt, ended, exception)

    def _end(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        attempt: Attempt,
        result: Any,
        exception: BaseException | None,
    ) -> str:
        """Write how ``attempt`` ended; returns the outcome's name (see :class:`AttemptObserver`)."""
        if isinstance(exception, ShutdownCutOff | RunCutOff):
            logger.warning(
                "[AgentTaskQueue] Job %s cut off by shutdown; it will be recovered as stalled",
                attempt.task_id,
            )
            return "cut_off"
        try:
            if exception is None:
                return "completed" if self._complete(attempt.claim, as_attempt_result(result)) else "lost"
            return self._fail(broker, message, attempt.claim, exception)
        except StoreUnavailable as exc:
            return self._release(attempt, exc)
        except OutcomeNotStored as exc:
            refused = exc
        logger.error(
            "[AgentTaskQueue] ✗ Job %s: the task store refused to record how run %s ended (%s);"
            " recording a failed attempt instead",
            attempt.task_id,
            attempt.claim.run_id,
            redact(str(refused.__cause__)),
        )
        try:
            return self._fail(broker, message, attempt.claim, refused)
        except (StoreUnavailable, OutcomeNotStored) as again:
            return self._release(attempt, again)

    @staticmethod
    def _release(attempt: Attempt, error: Exception) -> str:
        """The attempt's end cannot be written: stop holding it, so the stalled-job path takes over."""
        logger.error(
            "[AgentTaskQueue] ✗ Job %s: could not store how run %s ended (%s); released: it will be"
            " recovered as stalled when its lease expires",
            attempt.task_id,
            attempt.claim.run_id,
            redact(str(error)),
        )
        return "released"

    def _complete(self, claim: Claim, outcome: AttemptResult) -> bool:
        done = self._write(
            claim.task.id,
            lambda: self.store.complete(
                claim.task.id,
                claim.run_id,
                result=outcome.result,
                usage=outcome.usage,
                transcript=outcome.transcript,
                now=self.clock(),
                step=outcome.step,
            ),
        )
        if done:
            logger.info("[AgentTaskQueue] ✓ Job %s completed", claim.task.id)
            self.events.publish(claim.task.id, EventType.COMPLETED, completed_event(claim, outcome))
        else:
            logger.warning(
                "[AgentTaskQueue] Job %s finished but no longer held by run %s", claim.task.id, claim.run_id
            )
        return bool(done)

    def _fail(
        self, broker: dramatiq.Broker, message: MessageProxy, claim: Claim, exception: BaseException
    ) -> str:
        """Record a failed attempt as the failure policy decides; returns the outcome's name."""
        task = claim.task
        decision = decide(
            exception,
            task,
            max_attempts=self._max_attempts(broker, message, claim),
            backoff_base_ms=self.backoff_ms,
            max_postpones=self.max_postpones,
            max_postpone_ms=self.max_postpone_ms,
        )
        if not self._write(task.id, lambda: self._record(claim, exception, decision)):
            logger.warning(
                "[AgentTaskQueue] Job %s ended but is no longer held by run %s", task.id, claim.run_id
            )
            return "lost"
        error = redact(describe(exception))
        self.events.publish(task.id, *attempt_end_event(claim, decision, error, exception))
        if decision.outcome is Outcome.CANCEL:
            logger.info("[AgentTaskQueue] Job %s cancelled", task.id)
            return "cancelled"
        if decision.outcome is Outcome.AWAIT_APPROVAL:
            logger.info(
                "[AgentTaskQueue] Job %s %s; waiting for a decision (agentq approve/reject)", task.id, error
            )
            self.events.flush()  # followers see the wait before anyone can decide it
            return "awaiting_approval"
        if decision.outcome is Outcome.POSTPONE:
            logger.info("[AgentTaskQueue] Job %s postponed for %sms: %s", task.id, decision.delay_ms, error)
        else:
            logger.error("[AgentTaskQueue] ✗ Job %s failed: %s", task.id, error)
        if decision.outcome is Outcome.FAIL:
            logger.warning(
                "[AgentTaskQueue] ⚠ Job %s moved to dead letter queue after %s attempts",
                task.id,
                task.attempts,
            )
            return "failed"
        if decision.outcome is Outcome.RETRY:
            logger.info("Retrying job %s in %sms (attempt %s)", task.id, decision.delay_ms, task.attempts + 1)
        self.events.flush()  # this attempt's events before the next attempt's
        broker.enqueue(message.copy(options={QUEUED_OPTION: True}), delay=decision.delay_ms)
        return "retried" if decision.outcome is Outcome.RETRY else "postponed"

    def _record(self, claim: Claim, exception: BaseException, decision: Decision) -> bool:
        """Write the attempt's end as ``decision`` says; ``False`` if the run no longer holds the task."""
        task_id, run_id, now = claim.task.id, claim.run_id, self.clock()
        # A failed attempt's transcript holds error texts (e.g. a fallback's cause): redacted like the error.
        usage, transcript = usage_of(exception), redact_data(transcript_of(exception))
        due = now + timedelta(milliseconds=decision.delay_ms)
        if decision.outcome is Outcome.CANCEL:
            return self.store.finish_cancelled(task_id, run_id, usage=usage, transcript=transcript, now=now)
        if decision.outcome is Outcome.AWAIT_APPROVAL:
            reason = redact(describe(exception))
            return self.store.await_approval(
                task_id, run_id, reason=reason, usage=usage, transcript=transcript, now=now
            )
        if decision.outcome is Outcome.POSTPONE:
            reason = redact(describe(exception))
            return self.store.postpone(
                task_id, run_id, reason=reason, run_at=due, usage=usage, transcript=transcript, now=now
            )
        return self.store.fail_attempt(
            task_id,
            run_id,
            error=redact(describe(exception)),
            stacktrace=redacted_traceback(exception),
            usage=usage,
            transcript=transcript,
            retry_at=due if decision.outcome is Outcome.RETRY else None,
            now=now,
        )

    @staticmethod
    def _write(task_id: str, write: Callable[[], T]) -> T:
        """Run a status write, retrying while the database is unreachable (bounded).

        Raises:
            StoreUnavailable: The database stayed unreachable through every retry.
            OutcomeNotStored: The store refused the write for another reason (e.g. a value it rejects).
        """
        for delay in _STORE_RETRY_DELAYS:
            try:
                return _refusal_raised(task_id, write)
            except StoreUnavailable as exc:
                logger.warning("Task store unavailable (%s); retrying in %ss", exc, delay)
                time.sleep(delay)
        return _refusal_raised(task_id, write)

    @staticmethod
    def _max_attempts(broker: dramatiq.Broker, message: MessageProxy, claim: Claim) -> int:
        """The task's ``max_attempts``, capped by the actor's ``max_retries`` + 1 when it sets one."""
        retries = broker.get_actor(message.actor_name).options.get("max_retries")
        if isinstance(retries, int):
            return min(claim.task.max_attempts, retries + 1)
        return claim.task.max_attempts


#: Message options whose middleware read the actor's result in the worker thread (pipelines, callbacks).
RESULT_OPTIONS = frozenset({"pipe_target", "on_success", "on_failure"})


def _runs_on_loop(broker: dramatiq.Broker, message: MessageProxy) -> bool:
    """Whether the message's run goes on on the event loop: an async agent kind's, unless Dramatiq must pass
    its result on from the worker thread (a pipeline or callbacks; then the thread waits for it)."""
    if not getattr(broker.get_actor(message.actor_name), "runs_on_loop", False):
        return False
    return RESULT_OPTIONS.isdisjoint(message.options)


def set_lane(options: dict[str, Any], priority: int, organization_id: str) -> None:
    """Record the message's priority lane and organization (read by the lane broker)."""
    options[LANE_OPTION] = priority
    options[ORG_OPTION] = organization_id


def send_queued(
    broker: dramatiq.Broker,
    kind: str,
    task_id: str,
    *,
    priority: int | None = None,
    organization_id: str | None = None,
) -> None:
    """Send a new message for a task already ``queued`` in the database (lane looked up if not given)."""
    options: dict[str, Any] = {QUEUED_OPTION: True}
    if priority is not None and organization_id is not None:
        set_lane(options, priority, organization_id)
    broker.get_actor(kind).send_with_options(args=(task_id,), **options)


def queued_options(priority: int, organization_id: str) -> dict[str, Any]:
    """Options of a message for a task the producer already moved to ``queued`` (``AgentTaskQueue``):
    the middleware sends it in its lane without touching the database."""
    options: dict[str, Any] = {QUEUED_OPTION: True}
    set_lane(options, priority, organization_id)
    return options


def _refusal_raised(task_id: str, write: Callable[[], T]) -> T:
    """``write()``, any failure but :class:`StoreUnavailable` raised as :class:`OutcomeNotStored`."""
    try:
        return write()
    except StoreUnavailable:
        raise
    except Exception as exc:
        raise OutcomeNotStored(task_id, exc) from exc


__all__ = [
    "ENQUEUED_AT_OPTION",
    "PRIORITY_OPTION",
    "QUEUED_OPTION",
    "AttemptResult",
    "EnqueueRejected",
    "OutcomeNotStored",
    "ShutdownCutOff",
    "TaskLifecycle",
    "current_claim",
    "queued_options",
    "send_queued",
]
