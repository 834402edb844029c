"""A bare Dramatiq no-op actor: the baseline the project's pipeline is compared with.

``dramatiq benchmarks.bare_actors`` loads this module. The broker is a plain
:class:`~dramatiq.brokers.redis.RedisBroker` with Dramatiq's default middleware,
in its own namespace (``agentq-bench``), on ``BENCH_REDIS_URL``. Nothing
connects at import: redis-py connects on the first command.

Each message records its completion and nothing else: one pipelined round trip
that sets the first completion time (if unset), counts the message and sets the
last completion time, so the harness can tell when N are done and how long the
drain took.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

#: Redis URL of the benchmark (a dedicated db number, flushed between runs).
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
#: Key prefix of the bare broker, distinct from the project's ``agentq``.
NAMESPACE = "agentq-bench"
#: Messages completed so far.
DONE_KEY = f"{NAMESPACE}:done"
#: ``time.time()`` of the first completion.
FIRST_KEY = f"{NAMESPACE}:first"
#: ``time.time()`` of the latest completion.
LAST_KEY = f"{NAMESPACE}:last"
#: The bare actor's queue.
QUEUE_NAME = "bench"


def redis_url() -> str:
    """The Redis URL the bare broker uses: ``BENCH_REDIS_URL`` or the default db 13."""
    return os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)


client = redis.Redis.from_url(redis_url(), max_connections=64)
broker = RedisBroker(client=client, namespace=NAMESPACE)  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(broker=broker, queue_name=QUEUE_NAME, max_retries=0)
def noop() -> None:
    """Do nothing but record the completion."""
    now = repr(time.time())
    pipe = client.pipeline(transaction=False)
    pipe.set(FIRST_KEY, now, nx=True)
    pipe.incr(DONE_KEY)
    pipe.set(LAST_KEY, now)
    pipe.execute()


#: Start latencies of :func:`stamp`, in milliseconds.
LATENCY_KEY = f"{NAMESPACE}:latency"


@dramatiq.actor(broker=broker, queue_name=QUEUE_NAME, max_retries=0)
def stamp(sent_at: float) -> None:
    """Record how long after ``sent_at`` (the producer's ``time.time()``) this message started."""
    client.rpush(LATENCY_KEY, repr((time.time() - sent_at) * 1000))
