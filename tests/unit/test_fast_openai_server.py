"""The benchmarks' fast fake OpenAI server, through the real ``openai`` SDK."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.fakes.fast_openai_server import FastOpenAIServer
from tests.fakes.openai_server import openai_text

#: Concurrent requests in the concurrency test, and the least the server must see waiting at once.
CONCURRENT = 200
MIN_IN_FLIGHT = 100


@pytest.fixture(scope="module")
def server() -> Iterator[FastOpenAIServer]:
    with FastOpenAIServer(delay_s=0.2, content="hello from the fast fake") as running:
        yield running


def _client(server: FastOpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=10)


def test_the_sdk_gets_the_plain_text_completion(server: FastOpenAIServer) -> None:
    # Given the real SDK pointed at the server
    with _client(server) as client:
        # When it asks for a completion
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    # Then it gets openai_text's answer, parsed by the SDK
    expected = openai_text("hello from the fast fake").body
    assert completion.object == "chat.completion"
    assert completion.model == expected["model"]
    assert completion.choices[0].message.content == "hello from the fast fake"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (10, 5)


def test_connections_are_kept_alive(server: FastOpenAIServer) -> None:
    # Given a client that has made one call
    with _client(server) as client:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "1"}])
        before = server.stats().connections
        # When it makes four more
        for i in range(4):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": str(i)}])
        # Then they reuse its connection: only the stats poll opened one
        assert server.stats().connections == before + 1


def test_concurrent_requests_wait_together(server: FastOpenAIServer) -> None:
    # Given CONCURRENT threads sharing one SDK client, released at the same moment
    barrier = threading.Barrier(CONCURRENT, timeout=30)
    before = server.stats()

    def call(client: openai.OpenAI) -> str | None:
        barrier.wait()
        completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        return completion.choices[0].message.content

    # When each makes one call
    with _client(server) as client, ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(lambda _: call(client), range(CONCURRENT)))
    # Then every call succeeds, and the delays overlapped on the server
    assert answers == ["hello from the fast fake"] * CONCURRENT
    after = server.stats()
    assert after.requests - before.requests == CONCURRENT
    assert after.in_flight == 0
    assert after.max_in_flight >= MIN_IN_FLIGHT


def test_unknown_paths_get_a_json_404(server: FastOpenAIServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=5)
    try:
        conn.request("POST", "/v1/embeddings", body=b"{}", headers={"content-type": "application/json"})
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 404
    assert body["error"]["type"] == "not_found"


def test_leaving_the_context_stops_the_child_process() -> None:
    # Given a running server
    with FastOpenAIServer() as running:
        proc = running._proc
        assert proc is not None and proc.poll() is None
    # Then leaving the block ended its process and freed the port
    assert proc.poll() is not None
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", int(running.url.rsplit(":", 1)[1]), timeout=1).connect()
