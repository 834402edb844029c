"""Cancel requests reach the worker that runs the task within moments, wherever it runs.

``remove_job`` on a running task marks it in the database (``cancel_requested_at``, which the run checks
before each model and tool call) and sets a Redis key, ``<namespace>:cancel:<task id>``
(:func:`signal_cancel`), whose value is the run to stop and which lives :data:`CANCEL_TTL_S` (a later
attempt at the task, after ``retry_job``, is not stopped by an old request). In every worker process one
thread looks at the keys of the attempts the process is running, one ``MGET`` every :data:`POLL_S` (none
while it runs nothing), and sets the cancel signal of each attempt asked to stop: an in-flight model call
is abandoned and a running tool told (``orchestrator.cancel``), so the task ends ``cancelled`` within
about half a second of ``remove_job`` returning, not after its current call.

Redis is only the fast path: if the key cannot be set or read, the database flag still stops the run at
its next step.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from redis import RedisError

from middleware.attempts import Attempt, AttemptRegistry

logger = logging.getLogger("agentq.lifecycle")

#: Seconds between two looks at the cancel keys of the attempts a process runs.
POLL_S = 0.5
#: Seconds a cancel request stays in Redis: longer than a run takes to notice it, however it is stuck.
CANCEL_TTL_S = 3600


def cancel_key(broker: RedisBroker, task_id: str) -> str:
    """The Redis key that asks the run of ``task_id`` to stop."""
    return f"{broker.namespace}:cancel:{task_id}"


def signal_cancel(broker: dramatiq.Broker, task_id: str, run_id: str) -> bool:
    """Ask the worker running ``task_id``'s run ``run_id`` to stop now; ``False`` on a broker without Redis.

    Raises:
        RedisError: Redis did not take the request (the run still stops at its next step).
    """
    if not isinstance(broker, RedisBroker):
        return False
    broker.client.set(cancel_key(broker, task_id), run_id, ex=CANCEL_TTL_S)
    return True


class CancelWatch(dramatiq.Middleware):
    """Sets the cancel signal of this process's attempts whose task ``remove_job`` asked to stop."""

    def __init__(self, attempts: AttemptRegistry, *, poll_s: float = POLL_S) -> None:
        self.attempts = attempts
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if not isinstance(broker, RedisBroker):
            return  # no fast path: runs stop at their next step (the database flag)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(broker,), name="agentq-cancels", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _run(self, broker: RedisBroker) -> None:
        failing = False
        while not self._stop.wait(self.poll_s):
            try:
                self.check(broker)
                failing = False
            except RedisError as exc:
                if not failing:  # once per outage: runs still stop at their next step meanwhile
                    logger.warning("Cancel requests cannot be read from Redis: %s", exc)
                failing = True
            except Exception:
                logger.exception("Looking for cancel requests failed")

    def check(self, broker: RedisBroker) -> list[Attempt]:
        """Signal the running attempts asked to stop; returns them (one ``MGET``, none when idle)."""
        running = [attempt for attempt in self.attempts.running() if not attempt.cancel.is_set()]
        if not running:
            return []
        values = broker.client.mget([cancel_key(broker, attempt.task_id) for attempt in running])
        asked = [
            attempt
            for attempt, value in zip(running, values, strict=True)
            if value is not None and _text(value) == attempt.claim.run_id
        ]
        for attempt in asked:
            attempt.cancel.set("cancel requested")
            logger.info("[AgentTaskQueue] Job %s asked to stop; interrupting its run", attempt.task_id)
        return asked


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = ["CANCEL_TTL_S", "POLL_S", "CancelWatch", "cancel_key", "signal_cancel"]
