"""What Dramatiq's Redis broker holds, read with its own key layout (dramatiq 2.x).

Every message not yet acknowledged — waiting, delayed, prefetched by a worker or
running — keeps its payload in the hash ``<ns>:<queue>.msgs`` (``<queue>.DQ.msgs``
when delayed) until it is acked. So the task ids found there are exactly the tasks
that still have a message on the way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import dramatiq
from dramatiq.brokers.redis import RedisBroker

#: Payloads read per HSCAN call.
_SCAN_COUNT = 1000


def task_ids_in_flight(broker: RedisBroker, queue_names: Iterable[str]) -> set[str]:
    """Task ids of every unacknowledged message of agent actors on ``queue_names`` (delayed included)."""
    encoder = dramatiq.get_encoder()
    found: set[str] = set()
    for queue_name in queue_names:
        for key in (f"{broker.namespace}:{queue_name}.msgs", f"{broker.namespace}:{queue_name}.DQ.msgs"):
            for _, payload in broker.client.hscan_iter(key, count=_SCAN_COUNT):
                args: list[object] = encoder.decode(payload).get("args") or []
                if len(args) == 1 and isinstance(args[0], str):
                    found.add(args[0])
    return found


def requeue_dead_workers(broker: RedisBroker, queue_names: Iterable[str]) -> None:
    """Run Dramatiq's queue maintenance now: messages held by workers whose heartbeat stopped go back to
    their queue. Dramatiq itself only does this on a random 0.1 % of broker calls."""
    dispatch = broker.scripts["dispatch"]
    for queue_name in queue_names:
        for name in (queue_name, f"{queue_name}.DQ"):
            args = [
                "qsize",
                int(time.time() * 1000),
                name,
                broker.broker_id,
                broker.heartbeat_timeout,
                broker.dead_message_ttl,
                1,
                0,
            ]
            dispatch(keys=[broker.namespace], args=args)
