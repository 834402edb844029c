"""Pausing and resuming the queue for every worker, current and future (DESIGN §7).

The switch is one Redis key, ``<namespace>:paused``. While it exists the lane broker's
fetch returns nothing, so no worker takes new messages (and their heartbeats go on, so
nothing is requeued twice), and this middleware puts back any message a worker had
already prefetched: it goes to the front of its lane and starts after the resume. A
worker re-reads the flag at most every :data:`CACHE_S`, so a message it had prefetched
before the pause may still start within that long of ``pause_queue`` returning.
Active tasks finish. Dramatiq's own ``Worker.pause()`` is not used: it stops the
heartbeats, after which other workers would requeue the prefetched messages.
"""

from __future__ import annotations

import logging
import threading
import time

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import SkipMessage

from middleware.agent_messages import agent_kind, put_back

logger = logging.getLogger("agentq.lifecycle")

#: Key (under the broker's namespace) whose existence pauses the queue.
PAUSED_KEY = "paused"
#: How long a worker trusts its last reading of the flag for messages it had already prefetched.
CACHE_S = 0.25


class PauseSwitch:
    """The paused flag: in Redis for a Redis broker, in this process otherwise (tests)."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker
        self._local = threading.Event()
        self._cached: tuple[float, bool] = (0.0, False)

    def _key(self, broker: RedisBroker) -> str:
        return f"{broker.namespace}:{PAUSED_KEY}"

    def pause(self) -> None:
        if isinstance(self.broker, RedisBroker):
            self.broker.client.set(self._key(self.broker), "1")
        else:
            self._local.set()

    def resume(self) -> None:
        if isinstance(self.broker, RedisBroker):
            self.broker.client.delete(self._key(self.broker))
            ring = getattr(self.broker, "ring_bells", None)
            if ring is not None:
                ring(self.broker.get_declared_queues())
        else:
            self._local.clear()

    def is_paused(self) -> bool:
        if isinstance(self.broker, RedisBroker):
            return bool(self.broker.client.exists(self._key(self.broker)))
        return self._local.is_set()

    def recently_paused(self, max_age_s: float = CACHE_S) -> bool:
        """:meth:`is_paused`, read from Redis at most every ``max_age_s`` (a worker's per-message check)."""
        read_at, paused = self._cached
        now = time.monotonic()
        if now - read_at >= max_age_s:
            paused = self.is_paused()
            self._cached = (now, paused)
        return paused


def pause_switch(broker: dramatiq.Broker) -> PauseSwitch:
    """The switch of ``broker`` (one per broker object, so tests with a stub broker share it)."""
    switch: PauseSwitch | None = getattr(broker, "_agentq_pause_switch", None)
    if switch is None:
        switch = PauseSwitch(broker)
        broker._agentq_pause_switch = switch  # type: ignore[attr-defined]
    return switch


class Pause(dramatiq.Middleware):
    """Holds back prefetched agent messages while the queue is paused."""

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if agent_kind(broker, message) is None or not pause_switch(broker).recently_paused():
            return
        logger.debug("Queue paused: message %s goes back to its lane", message.message_id)
        put_back(broker, message, delay_ms=None)
        raise SkipMessage("queue paused")
