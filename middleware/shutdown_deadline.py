"""Bounds a graceful shutdown by ``AGENTQ_SHUTDOWN_TIMEOUT_MS``.

On SIGTERM/SIGINT Dramatiq stops fetching and waits for the worker threads (up
to its own ``--worker-shutdown-timeout``, 10 minutes by default). This middleware
gives active tasks ``AGENTQ_SHUTDOWN_TIMEOUT_MS`` to finish; a task still running
then is cut off: :class:`~middleware.task_lifecycle.ShutdownCutOff` is raised in its
thread (at its next Python instruction: a blocking C call finishes first), or a run on the
event loop is cancelled (its model call's HTTP request aborted); its row
stays ``running`` and, its lease no longer renewed, it is recovered as stalled and
runs again elsewhere. Nothing is lost, and the process exits 0.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.middleware import raise_thread_exception

from middleware.attempts import AttemptRegistry
from middleware.in_flight import RunsInFlight
from middleware.task_lifecycle import ShutdownCutOff

logger = logging.getLogger("agentq.lifecycle")


class ShutdownDeadline(dramatiq.Middleware):
    """Cuts off the tasks still running ``timeout_ms`` after shutdown began."""

    def __init__(
        self, attempts: AttemptRegistry, *, timeout_ms: int = 30_000, in_flight: RunsInFlight | None = None
    ) -> None:
        self.attempts = attempts
        self.in_flight = in_flight
        self.timeout_s = timeout_ms / 1000
        self._done = threading.Event()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        running = self.attempts.running()
        if running:
            logger.info("Waiting up to %gs for %s running task(s) to finish", self.timeout_s, len(running))
        self._done.clear()
        threading.Thread(target=self._cut_off_at_deadline, name="agentq-shutdown", daemon=True).start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._done.set()

    def _cut_off_at_deadline(self) -> None:
        if self._done.wait(self.timeout_s):
            return
        for attempt in self.attempts.running():
            logger.warning("[AgentTaskQueue] Job %s still running at the shutdown deadline", attempt.task_id)
            if attempt.thread_id is not None:
                raise_thread_exception(attempt.thread_id, ShutdownCutOff)  # type: ignore[no-untyped-call]
            elif self.in_flight is not None:
                self.in_flight.cut_off(attempt)  # cancelled on the event loop
