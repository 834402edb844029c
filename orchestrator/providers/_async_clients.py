"""Async SDK clients (``AsyncOpenAI``, ``AsyncAnthropic``), one per event loop and base URL.

An async client's connection pool belongs to the event loop it first ran on: its connections,
locks and waiters are that loop's objects, and using them from another loop fails or hangs. So
:class:`LoopClientCache` keeps a separate set of clients for every running loop (forgotten with
the loop), and starts afresh in a forked child, whose parent's clients and sockets are not its own.

One client per loop and base URL carries all of a process's calls to that URL: its pool allows
:data:`ASYNC_MAX_CONNECTIONS` requests at once and keeps as many connections alive between
calls, so a worker with 1,000 runs in flight neither waits for a connection nor reconnects
(the SDKs' own default keeps 100 alive).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import httpx2

from orchestrator.providers._http import MAX_BASE_URLS

__all__ = ["ASYNC_CONNECTION_LIMITS", "ASYNC_MAX_CONNECTIONS", "LoopClientCache"]

#: Most concurrent requests (and kept-alive connections) per async client, i.e. per loop and base URL.
ASYNC_MAX_CONNECTIONS = 1000
#: The connection pool limits every async client is built with.
ASYNC_CONNECTION_LIMITS = httpx2.Limits(
    max_connections=ASYNC_MAX_CONNECTIONS, max_keepalive_connections=ASYNC_MAX_CONNECTIONS
)

ClientT = TypeVar("ClientT")

logger = logging.getLogger("orchestrator")


class LoopClientCache(Generic[ClientT]):
    """Async SDK clients built lazily, one per running event loop and base URL.

    At most ``max_base_urls`` base URLs keep a client on one loop: one more closes the least
    recently used one (a call still running on it may then fail as a retryable connection
    error). Safe to use from several threads, each running its own loop.

    Args:
        build: Makes a client for a base URL; called on the loop that will use it.
        max_base_urls: Most base URLs with a client on one loop.
    """

    def __init__(self, build: Callable[[str], ClientT], *, max_base_urls: int = MAX_BASE_URLS) -> None:
        """Create the cache; ``build(base_url)`` makes a client."""
        if max_base_urls < 1:
            raise ValueError(f"max_base_urls must be at least 1, got {max_base_urls}")
        self._build = build
        self._max_base_urls = max_base_urls
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OrderedDict[str, ClientT]] = (
            weakref.WeakKeyDictionary()
        )
        self._closing: set[asyncio.Task[None]] = set()

    def _forget_if_forked(self) -> None:
        """In a forked child, drop the parent's clients (and a lock another thread may have held)."""
        pid = os.getpid()
        if pid != self._pid:
            self._lock = threading.Lock()
            self._loops = weakref.WeakKeyDictionary()
            self._closing = set()
            self._pid = pid

    def get(self, base_url: str) -> ClientT:
        """Return the running loop's client for ``base_url``, building it on first use.

        Raises:
            RuntimeError: No event loop is running in this thread.
        """
        loop = asyncio.get_running_loop()
        self._forget_if_forked()
        evicted: list[ClientT] = []
        with self._lock:
            clients = self._loops.get(loop)
            if clients is None:
                for closed in [other for other in self._loops if other.is_closed()]:
                    del self._loops[closed]  # a closed loop's clients can never run again
                clients = self._loops[loop] = OrderedDict()
            client = clients.get(base_url)
            if client is None:
                client = clients[base_url] = self._build(base_url)
                while len(clients) > self._max_base_urls:
                    evicted.append(clients.popitem(last=False)[1])
            else:
                clients.move_to_end(base_url)
        for old in evicted:
            task = loop.create_task(_aclose(old))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return client

    async def aclose(self) -> None:
        """Close and forget the running loop's clients (before the loop ends); the next call builds anew."""
        loop = asyncio.get_running_loop()
        self._forget_if_forked()
        with self._lock:
            clients = self._loops.pop(loop, None)
        for client in (clients or {}).values():
            await _aclose(client)

    def __len__(self) -> int:
        """Return how many clients are held, over all loops."""
        self._forget_if_forked()
        with self._lock:
            return sum(len(clients) for clients in self._loops.values())


async def _aclose(client: object) -> None:
    """Close an evicted client (its connection pool), if it can be closed."""
    close = getattr(client, "close", None)
    if callable(close):
        try:
            await close()
        except Exception:  # closing is best effort; the client is dropped either way
            logger.warning("closing an evicted async SDK client failed", exc_info=True)
