"""Sentry for workers and producers: one clear issue per dead-lettered task, secrets scrubbed.

Set-up (:func:`configure_sentry`, once per process, only with ``SENTRY_DSN``): worker
processes at ``after_process_boot``, producers at their first enqueue. We do **not** use
sentry-sdk's ``DramatiqIntegration``: it records the whole message and reports one event
per failed attempt. Instead:

* ``send_default_pii=False``, no local variables, ``auto_enabling_integrations=False`` (the
  OpenAI/Anthropic/Redis/… integrations stay off, so no prompt is ever recorded), and
  logging as breadcrumbs only (an ERROR log line is not an event);
* a ``before_send``/``before_send_transaction``/``before_breadcrumb`` scrubber passes every
  field through :mod:`config.redaction`: configured secrets (API and Supabase keys, Redis and
  database passwords, the DSN's key) and anything shaped like a key, a bearer token, a
  ``password=``/``token=`` pair or a URL password become ``[Filtered]``.

Per attempt (``Sentry`` middleware, an :class:`~middleware.attempts.AttemptObserver`): each
message runs in its own isolation scope that continues the OpenTelemetry trace (the
Sentry ``trace_id`` **is** the OTel trace id, also tagged ``otel.trace_id``), tagged
``task_id``, ``agent_id``, ``organization_id``, ``kind``, ``attempt`` and ``queue``;
with ``SENTRY_TRACES_SAMPLE_RATE`` > 0 it is also a ``queue.process`` transaction.

How failures appear: an attempt that fails and will be retried (or is postponed) sends no
event; with performance on, its ``queue.process`` transaction has status ``internal_error``
and tags ``outcome=retried``/``postponed`` and ``error_type``. Only the attempt that
dead-letters the task (``failed``) captures the exception: one event, level ``error``,
fingerprinted by kind and exception type (the same bug in many tasks is one issue), with an
``agentq`` context listing every attempt's number, status and error.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import dramatiq
import sentry_sdk
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name
from opentelemetry import trace

from config.redaction import FILTERED, redact_data, register_settings
from config.settings import Settings
from middleware.attempts import Attempt, AttemptRegistry
from middleware.in_flight import RunOnLoop
from taskstore import TaskStore

logger = logging.getLogger("agentq.sentry")

_lock = threading.Lock()
_configured = False
_local = threading.local()


class Scrubber:
    """Sentry's ``before_send``/``before_send_transaction``/``before_breadcrumb``: every string in the
    event or breadcrumb, in any field, goes through :func:`config.redaction.redact`."""

    def event(self, event: Any, hint: Any) -> Any:
        return redact_data(event)

    def breadcrumb(self, crumb: Any, hint: Any) -> Any:
        return redact_data(crumb)


def configure_sentry(settings: Settings) -> bool:
    """Initialise sentry-sdk once per process when ``SENTRY_DSN`` is set; True if Sentry is on."""
    global _configured
    with _lock:
        if _configured or settings.sentry_dsn is None:
            return _configured
        _configured = True
        from sentry_sdk.integrations.logging import LoggingIntegration

        register_settings(settings)
        scrubber = Scrubber()
        sentry_sdk.init(
            dsn=settings.sentry_dsn.get_secret_value(),
            send_default_pii=False,
            include_local_variables=False,
            max_request_body_size="never",
            auto_enabling_integrations=False,
            integrations=[LoggingIntegration(level=logging.INFO, event_level=None)],
            traces_sample_rate=settings.sentry_traces_sample_rate,
            before_send=scrubber.event,
            before_send_transaction=scrubber.event,
            before_breadcrumb=scrubber.breadcrumb,
        )
        return True


class Sentry(dramatiq.Middleware):
    """Per-message Sentry scope and transaction; one event when a task is dead-lettered."""

    def __init__(self, settings: Settings, store: TaskStore, attempts: AttemptRegistry) -> None:
        self.settings = settings
        self.store = store
        attempts.observe(self)

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        configure_sentry(self.settings)

    def before_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        if configure_sentry(self.settings):
            sentry_sdk.add_breadcrumb(
                category="queue.publish",
                message=f"enqueue {message.actor_name} {message.message_id}",
                data={"queue": q_name(message.queue_name), "delay_ms": delay or 0},
            )

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        client = sentry_sdk.get_client()
        if client.is_active():
            client.flush(timeout=5)

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if not sentry_sdk.get_client().is_active():
            return
        scope_manager = sentry_sdk.isolation_scope()
        scope = scope_manager.__enter__()
        scope.set_tag("queue", q_name(message.queue_name))
        scope.set_tag("message_id", message.message_id)
        headers = {}
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            trace_id = format(span_context.trace_id, "032x")
            headers["sentry-trace"] = f"{trace_id}-{format(span_context.span_id, '016x')}"
            scope.set_tag("otel.trace_id", trace_id)
        transaction = sentry_sdk.continue_trace(headers, op="queue.process", name=message.actor_name)
        transaction_manager = sentry_sdk.start_transaction(transaction)
        transaction_manager.__enter__()
        _active()[message.message_id] = (scope_manager, transaction_manager)

    def attempt_started(self, attempt: Attempt) -> None:
        if not sentry_sdk.get_client().is_active():
            return
        task = attempt.claim.task
        scope = sentry_sdk.get_isolation_scope()
        scope.set_tag("task_id", task.id)
        scope.set_tag("agent_id", task.agent_id)
        scope.set_tag("organization_id", task.organization_id)
        scope.set_tag("attempt", str(task.attempts))
        if attempt.claim.agent is not None:
            scope.set_tag("kind", attempt.claim.agent.kind)

    def attempt_ended(self, attempt: Attempt, outcome: str, error: BaseException | None) -> None:
        if not sentry_sdk.get_client().is_active():
            return
        scope = sentry_sdk.get_isolation_scope()
        scope.set_tag("outcome", outcome)
        if error is None or outcome in {"completed", "cancelled", "awaiting_approval"}:
            return
        task = attempt.claim.task
        scope.set_tag("error_type", type(error).__name__)
        if outcome != "failed":
            return  # a retried/postponed attempt: its transaction says so, the final event lists it
        kind = attempt.claim.agent.kind if attempt.claim.agent is not None else "unknown"
        scope.set_context("agentq", {"task_id": task.id, "attempts": self._attempts(task.id)})
        scope.fingerprint = ["agentq-task-failed", kind, type(error).__name__]
        sentry_sdk.capture_exception(error)

    def _attempts(self, task_id: str) -> list[dict[str, Any]]:
        try:
            runs = self.store.get_runs(task_id)
        except Exception:  # the event matters more than its context
            return []
        return [{"attempt": run.attempt, "status": str(run.status), "error": run.error} for run in runs]

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
        """The run goes on on the event loop: its transaction ends with it (the run keeps the scope)."""
        entry = _active().pop(attempt.message_id, None)
        if entry is not None:
            scope_manager, transaction_manager = entry
            scope_manager.__exit__(None, None, None)  # this thread's context; the run's copy keeps the scope
            run.when_ended(lambda _result, error: _finish(transaction_manager, error))

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._end(message, None)

    @staticmethod
    def _end(message: MessageProxy, exception: BaseException | None) -> None:
        entry = _active().pop(message.message_id, None)
        if entry is None:
            return
        scope_manager, transaction_manager = entry
        _finish(transaction_manager, exception)
        scope_manager.__exit__(None, None, None)


def _finish(transaction_manager: Any, exception: BaseException | None) -> None:
    if exception is not None:
        transaction_manager.set_status("internal_error")
    transaction_manager.__exit__(None, None, None)


def _active() -> dict[str, tuple[Any, Any]]:
    active: dict[str, tuple[Any, Any]] | None = getattr(_local, "active", None)
    if active is None:
        active = _local.active = {}
    return active


__all__ = ["FILTERED", "Scrubber", "Sentry", "configure_sentry"]
