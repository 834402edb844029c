"""Holding back prefetched messages while the queue is paused (see docs/architecture.md, *One task's path*).

The switch belongs to the broker: :class:`actors.broker.lanes.LaneBroker` offers ``pause()``,
``resume()`` and ``paused()`` (:class:`PausableBroker`), keeping one Redis key. While it
exists the broker's fetch returns nothing, so no worker takes new messages (and their
heartbeats go on, so nothing is requeued twice), and this middleware puts back any message a
worker had already prefetched: it goes to the front of its lane and starts after the resume.
A worker re-reads the flag at most every :data:`CACHE_S`, so a message it had prefetched
before the pause may still start within that long of ``pause_queue`` returning. Active tasks
finish. Dramatiq's own ``Worker.pause()`` is not used: it stops the heartbeats, after which
other workers would requeue the prefetched messages. A broker without the switch (Dramatiq's
``StubBroker`` in tests) is never paused.
"""

from __future__ import annotations

import abc
import logging

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage

from middleware.agent_messages import agent_kind, put_back

logger = logging.getLogger("agentq.lifecycle")

#: How long a worker trusts its last reading of the flag for messages it had already prefetched.
CACHE_S = 0.25


class PausableBroker(abc.ABC):
    """A broker that can pause every worker's fetch (:class:`actors.broker.lanes.LaneBroker` is one)."""

    @abc.abstractmethod
    def pause(self) -> None:
        """Stop every worker, current and future, from starting messages."""

    @abc.abstractmethod
    def resume(self) -> None:
        """Let workers start messages again."""

    @abc.abstractmethod
    def paused(self, *, max_age_s: float = 0.0) -> bool:
        """Whether the queue is paused; a reading under ``max_age_s`` old may be reused."""


class Pause(dramatiq.Middleware):
    """Holds back prefetched agent messages while the queue is paused."""

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if not isinstance(broker, PausableBroker) or agent_kind(broker, message) is None:
            return
        if not broker.paused(max_age_s=CACHE_S):
            return
        logger.debug("Queue paused: message %s goes back to its lane", message.message_id)
        put_back(broker, message, delay_ms=None)
        raise SkipMessage("queue paused")
