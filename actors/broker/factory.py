"""Building the Redis broker from settings. Nothing connects until the broker is used."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import dramatiq
import redis

from actors.broker.lanes import IDLE_BLOCK_S, LaneBroker
from actors.events.publisher import event_sink
from config.errors import ConfigError
from config.settings import Settings
from middleware import build_middleware
from taskstore import TaskStore, utcnow

#: Prefix of every Redis key the broker writes.
NAMESPACE = "agentq"
#: Shortest socket timeout: a reply must be allowed to take longer than the blocking fetch waits.
MIN_SOCKET_TIMEOUT_S = IDLE_BLOCK_S + 1.0


def redis_client(settings: Settings) -> redis.Redis:
    """A Redis client for the configured server (``rediss://`` for TLS).

    The pool *blocks* when all its connections are in use (up to 20 s) instead of failing: with
    redis-py's default pool, more worker threads than connections make acks fail with
    "Too many connections" and the worker stalls. Its size covers every thread plus the blocking
    consumers; ``dramatiq --threads`` larger than ``QUEUE_CONCURRENCY`` only waits a little.

    Every command waits at most ``AGENTQ_REDIS_SOCKET_TIMEOUT_S`` for its reply, so a server that
    stops answering raises ``redis.TimeoutError`` instead of freezing the thread. Options in the
    URL's query string (``?socket_timeout=…&ssl_ca_certs=…``) win over these.

    Raises:
        ConfigError: The socket timeout does not exceed the lane broker's blocking fetch.
    """
    socket_timeout = settings.redis_socket_timeout_s
    if socket_timeout < MIN_SOCKET_TIMEOUT_S:
        raise ConfigError(
            f"AGENTQ_REDIS_SOCKET_TIMEOUT_S={socket_timeout:g} must be at least {MIN_SOCKET_TIMEOUT_S:g}: "
            f"idle consumers block {IDLE_BLOCK_S:g} s waiting for messages"
        )
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_connection_url(),
        max_connections=max(settings.queue_concurrency * 2 + 16, 128),
        timeout=20,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)


def build_broker(
    settings: Settings,
    store: TaskStore,
    *,
    middleware: Sequence[dramatiq.Middleware] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> LaneBroker:
    """The Redis broker (priority lanes, fair turns, blocking fetch) with our middleware stack, whose
    live events go through the broker's Redis client (``event_sink``: one publisher per client)."""
    client = redis_client(settings)
    if middleware is not None:
        stack = list(middleware)
    else:
        stack = build_middleware(settings, store, clock=clock, events=event_sink(settings, client))
    return LaneBroker(fair=settings.fair_ordering, client=client, middleware=stack, namespace=NAMESPACE)
