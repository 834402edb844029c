"""``LoopClientCache``: async SDK clients per running event loop and base URL."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from orchestrator.providers._async_clients import ASYNC_CONNECTION_LIMITS, LoopClientCache


class Built:
    """A stand-in async client recording its base URL and whether it was closed."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def _get(cache: LoopClientCache[Built], base_url: str) -> Built:
    return cache.get(base_url)


def test_one_loop_reuses_its_client_per_base_url_and_another_loop_gets_its_own() -> None:
    cache = LoopClientCache(Built)

    async def on_one_loop() -> tuple[Built, Built, Built]:
        return cache.get("http://a/v1"), cache.get("http://a/v1"), cache.get("http://b/v1")

    first, again, other = asyncio.run(on_one_loop())
    got: list[Built] = []
    thread = threading.Thread(target=lambda: got.append(asyncio.run(_get(cache, "http://a/v1"))))
    thread.start()
    thread.join(timeout=10)

    assert first is again and other is not first and other.base_url == "http://b/v1"
    assert got[0] is not first  # another thread's loop: its own client


def test_a_closed_loops_clients_are_forgotten() -> None:
    # Given a client on a loop that has been closed but is still referenced
    cache = LoopClientCache(Built)
    closed = asyncio.new_event_loop()
    first = closed.run_until_complete(_get(cache, "http://a/v1"))
    closed.close()

    # When a new loop asks
    async def again() -> tuple[Built, int]:
        return cache.get("http://a/v1"), len(cache)

    second, held = asyncio.run(again())

    # Then it gets its own client, and the closed loop's is no longer held
    assert second is not first
    assert held == 1


def test_there_is_no_client_outside_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        LoopClientCache(Built).get("http://a/v1")


def test_the_least_recently_used_base_url_is_evicted_and_its_client_closed_on_the_loop() -> None:
    cache = LoopClientCache(Built, max_base_urls=2)

    async def scenario() -> list[Built]:
        a, b = cache.get("http://a/v1"), cache.get("http://b/v1")
        assert cache.get("http://a/v1") is a
        c = cache.get("http://c/v1")
        await asyncio.sleep(0)  # the close runs as a task on this loop
        await asyncio.sleep(0)
        return [a, b, c]

    a, b, c = asyncio.run(scenario())

    assert [a.closed, b.closed, c.closed] == [False, True, False]


def test_aclose_closes_and_forgets_the_running_loops_clients() -> None:
    cache = LoopClientCache(Built)

    async def scenario() -> tuple[Built, Built]:
        first = cache.get("http://a/v1")
        await cache.aclose()
        return first, cache.get("http://a/v1")

    first, after = asyncio.run(scenario())

    assert first.closed and after is not first and not after.closed


def test_a_forked_child_does_not_use_its_parents_clients() -> None:
    # Given a client built on a loop that the child process will go on using
    cache = LoopClientCache(Built)
    loop = asyncio.new_event_loop()
    try:
        parents = loop.run_until_complete(_get(cache, "http://a/v1"))
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the child: report whether it got the parent's client, then leave at once
            try:
                same = loop.run_until_complete(_get(cache, "http://a/v1")) is parents
                os.write(write, b"same" if same else b"new")
            finally:
                os._exit(0)
        os.close(write)
        _, status = os.waitpid(child, 0)
        answer = os.read(read, 16)
        os.close(read)
    finally:
        loop.close()

    # Then the child built its own; the parent keeps its client
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == b"new"


def test_async_clients_allow_a_thousand_requests_at_once_and_keep_their_connections() -> None:
    assert ASYNC_CONNECTION_LIMITS.max_connections == 1000
    assert ASYNC_CONNECTION_LIMITS.max_keepalive_connections == 1000
