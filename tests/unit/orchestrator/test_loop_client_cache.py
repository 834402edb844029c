"""``LoopClientCache``: async SDK clients per running event loop and base URL, leased per call."""

from __future__ import annotations

import asyncio
import contextlib
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
    with cache.lease(base_url) as client:
        return client


def _got(cache: LoopClientCache[Built], base_url: str) -> Built:
    """The client a call on the running loop gets (its lease ends at once)."""
    with cache.lease(base_url) as client:
        return client


def test_one_loop_reuses_its_client_per_base_url_and_another_loop_gets_its_own() -> None:
    cache = LoopClientCache(Built)

    async def on_one_loop() -> tuple[Built, Built, Built]:
        return _got(cache, "http://a/v1"), _got(cache, "http://a/v1"), _got(cache, "http://b/v1")

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
        return _got(cache, "http://a/v1"), len(cache)

    second, held = asyncio.run(again())

    # Then it gets its own client, and the closed loop's is no longer held
    assert second is not first
    assert held == 1


def test_there_is_no_client_outside_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        _got(LoopClientCache(Built), "http://a/v1")


def test_the_least_recently_used_base_url_is_evicted_and_its_client_closed_on_the_loop() -> None:
    cache = LoopClientCache(Built, max_base_urls=2)

    async def scenario() -> list[Built]:
        a, b = _got(cache, "http://a/v1"), _got(cache, "http://b/v1")
        assert _got(cache, "http://a/v1") is a
        c = _got(cache, "http://c/v1")
        await asyncio.sleep(0)  # the close runs as a task on this loop
        await asyncio.sleep(0)
        return [a, b, c]

    a, b, c = asyncio.run(scenario())

    assert [a.closed, b.closed, c.closed] == [False, True, False]


def test_aclose_closes_and_forgets_the_running_loops_clients() -> None:
    cache = LoopClientCache(Built)

    async def scenario() -> tuple[Built, Built]:
        first = _got(cache, "http://a/v1")
        await cache.aclose()
        return first, _got(cache, "http://a/v1")

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


def test_calls_at_once_spread_over_clients_up_to_the_most_per_loop() -> None:
    # Given two calls per client and at most three clients
    cache = LoopClientCache(Built, calls_per_client=2, clients_per_loop=3)

    async def scenario() -> tuple[list[Built], Built, Built]:
        with contextlib.ExitStack() as leases:
            # When seven calls are under way at once
            held = [leases.enter_context(cache.lease("http://a/v1")) for _ in range(7)]
        # and, once they have ended, one more comes, then one for another base URL
        return held, _got(cache, "http://a/v1"), _got(cache, "http://b/v1")

    held, later, other = asyncio.run(scenario())

    # Then two calls went to each of three clients, the seventh to the least busy (the first),
    # a call after them all reuses the first client, and another base URL has its own
    first, second, third = held[0], held[2], held[4]
    assert held == [first, first, second, second, third, third, first]
    assert len({id(first), id(second), id(third)}) == 3
    assert later is first and other not in held


def test_a_cancelled_call_gives_its_lease_back() -> None:
    cache = LoopClientCache(Built, calls_per_client=1)

    async def scenario() -> tuple[Built, Built]:
        async def call() -> None:
            with cache.lease("http://a/v1"):
                await asyncio.sleep(10)

        task = asyncio.create_task(call())
        await asyncio.sleep(0)
        second = _got(cache, "http://a/v1")  # the first client is busy: another one
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return second, _got(cache, "http://a/v1")

    second, after = asyncio.run(scenario())

    assert after is not second  # the first client is free again, so it comes first


@pytest.mark.parametrize(("calls", "clients", "urls"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_sizes_below_one_are_rejected(calls: int, clients: int, urls: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LoopClientCache(Built, calls_per_client=calls, clients_per_loop=clients, max_base_urls=urls)


def test_each_async_client_allows_a_thousand_requests_and_keeps_a_hundred_connections() -> None:
    assert ASYNC_CONNECTION_LIMITS.max_connections == 1000
    assert ASYNC_CONNECTION_LIMITS.max_keepalive_connections == 100
