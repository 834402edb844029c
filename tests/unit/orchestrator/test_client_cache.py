"""``ClientCache``: SDK clients per base URL and group of threads."""

from __future__ import annotations

import threading

import pytest

from orchestrator.providers._http import MAX_BASE_URLS, THREADS_PER_CLIENT, ClientCache


class Built:
    """A stand-in client recording its base URL."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _in_new_thread(cache: ClientCache[Built], base_url: str) -> Built:
    """``cache.get(base_url)`` from a fresh thread, started after the previous one ended."""
    got: list[Built] = []
    thread = threading.Thread(target=lambda: got.append(cache.get(base_url)))
    thread.start()
    thread.join(timeout=10)
    return got[0]


def test_one_thread_gets_the_same_client_for_a_base_url_and_another_for_another_url() -> None:
    cache = ClientCache(Built)

    first, again, other = cache.get("http://a/v1"), cache.get("http://a/v1"), cache.get("http://b/v1")

    assert first is again
    assert other is not first and other.base_url == "http://b/v1"
    assert len(cache) == 2


def test_threads_share_a_client_up_to_threads_per_client() -> None:
    # Given a cache that puts two threads on one client, with at most two clients
    cache = ClientCache(Built, threads_per_client=2, max_clients=2)

    # When five threads ask in turn
    clients = [_in_new_thread(cache, "http://a/v1") for _ in range(5)]

    # Then threads 1-2 share a client, 3-4 the next, and the fifth wraps round to the first
    assert clients[0] is clients[1]
    assert clients[2] is clients[3] and clients[2] is not clients[0]
    assert clients[4] is clients[0]
    assert len(cache) == 2


def test_a_small_worker_keeps_one_client_per_base_url() -> None:
    cache = ClientCache(Built)

    clients = {id(_in_new_thread(cache, "http://a/v1")) for _ in range(THREADS_PER_CLIENT)}

    assert len(clients) == 1


@pytest.mark.parametrize(
    ("threads_per_client", "max_clients", "max_base_urls"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)]
)
def test_sizes_below_one_are_rejected(threads_per_client: int, max_clients: int, max_base_urls: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ClientCache(
            Built, threads_per_client=threads_per_client, max_clients=max_clients, max_base_urls=max_base_urls
        )


def test_the_least_recently_used_base_url_is_evicted_and_its_client_closed() -> None:
    cache = ClientCache(Built, max_base_urls=2)
    a, b = cache.get("http://a/v1"), cache.get("http://b/v1")
    assert cache.get("http://a/v1") is a  # a is now the most recently used

    c = cache.get("http://c/v1")

    assert [a.closed, b.closed, c.closed] == [False, True, False]
    assert len(cache) == 2
    assert cache.get("http://b/v1") is not b  # built afresh, evicting a
    assert [a.closed, c.closed] == [True, False]
    assert len(cache) == 2


def test_a_flood_of_base_urls_keeps_the_default_bound() -> None:
    cache = ClientCache(Built)
    built = [cache.get(f"http://host-{index}/v1") for index in range(MAX_BASE_URLS * 3)]

    assert len(cache) == MAX_BASE_URLS == 32
    assert sum(client.closed for client in built) == MAX_BASE_URLS * 2
