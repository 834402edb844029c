"""OpenTelemetry spans for messages: ``<queue> publish`` in the producer, ``<queue> process`` in the worker.

* ``before_enqueue`` starts a PRODUCER span and injects its W3C trace context into
  ``message.options[TRACE_OPTION]``; ``after_enqueue`` ends it. An enqueue that fails
  (task refused, Redis down) ends it with an error status on the thread's next enqueue,
  or at once through :func:`abandon_publish`. A batch (``LaneBroker.enqueue_many``) keeps
  one span per message open until the whole batch has landed.
* ``before_process_message`` extracts that context and starts a CONSUMER span, made
  current (attached) for the whole attempt: the claim, the actor, the agent's ``chat``
  and ``execute_tool`` spans, the status write and any retry enqueue happen inside it.
  ``after_process_message`` and ``after_skip_message`` end it and detach it; the span of a run
  handed to the event loop (an async agent kind) is detached then and ends with the run.
* Retries are **parented**, not linked: ``TaskLifecycle`` re-enqueues a failed attempt
  while the attempt's CONSUMER span is current, so the retry's ``publish`` span is its
  child and the next attempt's ``process`` span the child of that. One task is one trace:
  ``publish → process (attempt 1) → publish (retry) → process (attempt 2) …``. The same
  holds for ordinary actors retried by Dramatiq's ``Retries``.
* A message that already carries trace context and is enqueued with no span current is
  a delayed message moved from ``.DQ`` back to its queue by a consumer thread: it keeps
  its context and gets no span (no new root).

Attributes: ``messaging.system``, ``messaging.destination.name``, ``messaging.message.id``,
``messaging.operation.type``, ``agentq.task_id`` and, once the task is claimed (an
:class:`~middleware.attempts.AttemptObserver` hook), ``agentq.agent_id``,
``agentq.organization_id``, ``agentq.kind``, ``agentq.attempt`` and ``agentq.outcome``.

Position: second in the stack, right after ``StoreLifecycle``: its ``before_*`` hooks run
before every other (the span covers skips by any middleware, the claim and the
``pending → queued`` write) and its ``after_*`` hooks after every other but ``StoreLifecycle``.

Exporting is set up per process by :mod:`config.trace_export` (``after_process_boot``
in workers, the first enqueue in producers); with nothing configured the API's no-op
tracer makes all this nearly free.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from config.redaction import describe_error, exception_attributes
from middleware.agent_messages import AnyMessage, agent_kind, message_task_id
from middleware.attempts import Attempt, AttemptRegistry
from middleware.batches import current_batch
from middleware.in_flight import RunOnLoop

#: Message option holding the W3C trace context (``traceparent``/``tracestate``) of the publish span.
TRACE_OPTION = "agentq_trace"
#: Instrumentation scope name of these spans.
TRACER_NAME = "agentq.dramatiq"

_local = threading.local()


def _tracer(provider: trace.TracerProvider | None) -> trace.Tracer:
    return (provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME)


def abandon_publish(error: BaseException) -> None:
    """End this thread's open publish spans with ``error``: their enqueue failed (called by the actor)."""
    pending = _publishing()
    _local.publish = {}
    for span in pending.values():
        _fail(span, error)
        span.end()


def _publishing() -> dict[str, Span]:
    """This thread's publish spans whose enqueue has not completed yet, by message id."""
    publishing: dict[str, Span] | None = getattr(_local, "publish", None)
    if publishing is None:
        publishing = _local.publish = {}
    return publishing


def _fail(span: Span, error: BaseException) -> None:
    """Mark ``span`` failed by ``error``: a redacted ``exception`` event and status description."""
    span.add_event("exception", exception_attributes(error))
    span.set_status(Status(StatusCode.ERROR, describe_error(error)))


class Tracing(dramatiq.Middleware):
    """Producer and consumer spans for every message, with W3C context in the message options.

    Args:
        attempts: The registry ``TaskLifecycle`` claims into; the span gets the task's agent,
            organization and attempt from it.
        tracer_provider: Where spans go; None means the global provider (tests pass their own).
        setup: Called once per process (worker boot, first enqueue) to configure exporting.
        shutdown: Called at worker shutdown to flush and close the exporter.
    """

    def __init__(
        self,
        attempts: AttemptRegistry | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        setup: Callable[[], object] | None = None,
        shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.tracer = _tracer(tracer_provider)
        self._own_provider = tracer_provider is not None
        self._setup = setup
        self._shutdown = shutdown
        self._set_up = False
        if attempts is not None:
            attempts.observe(self)

    def _off(self) -> bool:
        """True while no tracer provider is installed: every hook returns at once (the no-op path)."""
        return not self._own_provider and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)

    def _ensure_setup(self) -> None:
        if not self._set_up:
            self._set_up = True
            if self._setup is not None:
                self._setup()

    # --- process ------------------------------------------------------------

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        self._ensure_setup()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._shutdown is not None:
            self._shutdown()

    # --- producer side ------------------------------------------------------

    def before_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        self._ensure_setup()
        if self._off():
            return
        batch = current_batch()
        if batch is None or batch is not getattr(_local, "batch", None):
            # Spans still open are not this batch's messages in flight: their enqueue failed.
            abandon_publish(RuntimeError("enqueue did not complete"))
        _local.batch = batch
        current = trace.get_current_span().get_span_context()
        if TRACE_OPTION in message.options and not current.is_valid:
            return  # a delayed message moved back to its queue: keep its trace, add nothing
        attributes = _attributes(broker, message, "send")
        if delay:
            attributes["agentq.delay_ms"] = int(delay)
        span = self.tracer.start_span(
            f"{q_name(message.queue_name)} publish", kind=SpanKind.PRODUCER, attributes=attributes
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        if carrier:
            message.options[TRACE_OPTION] = carrier
        _publishing()[message.message_id] = span

    def after_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        if self._off():
            return
        span = _publishing().pop(message.message_id, None)
        if span is not None:
            span.end()

    # --- worker side --------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if self._off():
            return
        carrier = message.options.get(TRACE_OPTION)
        parent = propagate.extract(carrier if isinstance(carrier, dict) else {})
        span = self.tracer.start_span(
            f"{q_name(message.queue_name)} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_attributes(broker, message, "process"),
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        _active()[message.message_id] = (span, token)

    def attempt_started(self, attempt: Attempt) -> None:
        task = attempt.claim.task
        span = trace.get_current_span()
        span.set_attribute("agentq.agent_id", task.agent_id)
        span.set_attribute("agentq.organization_id", task.organization_id)
        span.set_attribute("agentq.attempt", task.attempts)
        if attempt.claim.agent is not None:
            span.set_attribute("agentq.kind", attempt.claim.agent.kind)

    def attempt_ended(self, attempt: Attempt, outcome: str, error: BaseException | None) -> None:
        trace.get_current_span().set_attribute("agentq.outcome", outcome)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._end(message, exception)

    def attempt_handed_off(self, attempt: Attempt, run: RunOnLoop) -> None:
        """The run goes on on the event loop: the message's span is detached here and ends with the run."""
        entry = _active().pop(attempt.message_id, None)
        if entry is not None:
            span, token = entry
            otel_context.detach(token)  # type: ignore[arg-type]
            run.when_ended(lambda _result, error: _end_span(span, error))

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        entry = _active().get(message.message_id)
        if entry is not None:
            entry[0].set_attribute("agentq.skipped", True)
        self._end(message, None)

    @staticmethod
    def _end(message: MessageProxy, exception: BaseException | None) -> None:
        entry = _active().pop(message.message_id, None)
        if entry is None:
            return
        span, token = entry
        _end_span(span, exception)
        otel_context.detach(token)  # type: ignore[arg-type]


def _end_span(span: Span, exception: BaseException | None) -> None:
    if exception is not None:
        _fail(span, exception)
    span.end()


def _active() -> dict[str, tuple[Span, object]]:
    active: dict[str, tuple[Span, object]] | None = getattr(_local, "active", None)
    if active is None:
        active = _local.active = {}
    return active


def _attributes(broker: dramatiq.Broker, message: AnyMessage, operation: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "dramatiq",
        "messaging.destination.name": q_name(message.queue_name),
        "messaging.message.id": message.message_id,
        "messaging.operation.type": operation,
        "messaging.dramatiq.broker": "redis",
        "messaging.dramatiq.actor": message.actor_name,
    }
    if agent_kind(broker, message) is not None:
        task_id = message_task_id(message)
        if isinstance(task_id, str):
            attributes["agentq.task_id"] = task_id
    return attributes


__all__ = ["TRACER_NAME", "TRACE_OPTION", "Tracing", "abandon_publish"]
