"""The event publisher on the real Redis: capped streams, and Redis failures that never reach the run."""

from __future__ import annotations

import json
import logging
import multiprocessing
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from actors.events import EventPublisher, stream_key
from actors.events.publisher import MAX_TEXT_CHARS
from middleware.events import EventType
from tests.acceptance.processes import TcpProxy
from tests.harness import wait_until

pytestmark = pytest.mark.integration

TASK = "00000000-0000-4000-8000-0000000000bb"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def entries(client: redis.Redis, task_id: str = TASK) -> list[tuple[str, dict[str, object]]]:
    stream: Any = client.xrange(stream_key(task_id))
    return [(fields[b"type"].decode(), json.loads(fields[b"data"])) for _, fields in stream]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if "live event(s) not published" in record.getMessage()
    ]


def test_a_stream_is_capped_near_its_maximum_length(client: redis.Redis) -> None:
    publisher = EventPublisher(client, max_len=10)

    for index in range(2_000):
        publisher.publish(TASK, EventType.LLM_DELTA, {"chars": index})
    assert publisher.flush(10)

    # MAXLEN ~ trims whole nodes of the stream (100 entries each by default): about the cap, never 2,000
    assert client.xlen(stream_key(TASK)) <= 10 + 100
    assert publisher.sent == 2_000 and publisher.lost == 0
    publisher.close()


def test_content_is_kept_out_unless_recorded_and_long_text_is_clipped(client: redis.Redis) -> None:
    quiet, loud = EventPublisher(client), EventPublisher(client, record_content=True)
    data = {"chars": 3, "text": "x" * (MAX_TEXT_CHARS + 50), "api_key": "sk-live-0123456789abcdef"}

    quiet.publish(TASK, EventType.LLM_DELTA, data)
    assert quiet.flush(5)
    loud.publish(TASK, EventType.LLM_DELTA, data)
    assert loud.flush(5)

    [(_, without), (_, with_text)] = entries(client)
    assert without == {"chars": 3, "api_key": "[Filtered]"}
    assert with_text["text"] == "x" * MAX_TEXT_CHARS + "... [50 more chars]"


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A TCP server that accepts connections and reads every command but never replies."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def swallow(conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(conn)
            threading.Thread(target=swallow, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    server.close()


def test_a_redis_that_never_answers_never_holds_up_the_publishing_thread(
    silent_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(silent_redis, socket_timeout=2, socket_connect_timeout=2)
    publisher = EventPublisher(client)

    # When a run publishes its events while the sending thread is stuck on the first batch
    for index in range(100):
        publisher.publish(TASK, EventType.LLM_DELTA, {"chars": index})

    # Then every publish returned before Redis answered anything (nothing sent, nothing lost yet)
    assert (publisher.sent, publisher.lost) == (0, 0)
    assert publisher.flush(0.1) is False
    # and once the socket times out, the events are lost, with one warning
    wait_until(lambda: publisher.lost == 100, timeout_s=20, what="the batches to time out")
    assert publisher.flush(0.1) is False  # while Redis is failing, no one waits for it
    assert len(warnings(caplog)) == 1
    client.close()


def test_events_lost_while_redis_is_cut_off_are_warned_once_and_publishing_resumes(
    client: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentq.events")
    with TcpProxy(target_port=client.connection_pool.connection_kwargs["port"]) as proxy:
        through = redis.Redis.from_url(proxy.through(redis_url), socket_timeout=2, socket_connect_timeout=1)
        publisher = EventPublisher(through)
        publisher.publish(TASK, EventType.QUEUED, {"priority": 5})
        assert publisher.flush(5)

        # When Redis is cut off while events keep coming, batch after batch
        proxy.cut()
        for index in range(3):
            publisher.publish(TASK, EventType.LLM_DELTA, {"chars": index})
            wait_until(lambda i=index: publisher.lost == i + 1, timeout_s=10, what="the batch to fail")

        # Then they are lost, with one warning (the next one a minute later at the earliest)
        assert len(warnings(caplog)) == 1

        # and once Redis answers again, the next events are published
        proxy.restore()
        publisher.publish(TASK, EventType.COMPLETED, {"attempt": 1})
        wait_until(lambda: publisher.flush(0.2), timeout_s=15, what="publishing to resume")
        through.close()

    assert [event_type for event_type, _ in entries(client)] == ["queued", "completed"]


def test_a_full_buffer_drops_new_events_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    # A client that cannot connect (nothing listens on port 1): every batch fails, the buffer is small
    client = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    publisher = EventPublisher(client, max_buffer=5)

    publisher.publish_many([(TASK, EventType.LLM_DELTA, {"chars": index}) for index in range(20)])

    assert publisher.lost >= 15  # dropped at once: the buffer holds 5
    wait_until(lambda: publisher.lost == 20, timeout_s=10, what="the buffered five to fail too")
    assert len(warnings(caplog)) == 1
    client.close()


def _publish_in_child() -> None:
    from actors.events import EventPublisher as ChildPublisher

    # The parent's publisher object was inherited, its thread was not: it must work here anyway
    publisher = INHERITED["publisher"]
    publisher.publish(TASK, EventType.RUNNING, {"attempt": 1})
    assert isinstance(publisher, ChildPublisher) and publisher.flush(5)


INHERITED: dict[str, EventPublisher] = {}


def test_a_forked_worker_process_publishes_with_the_publisher_it_inherited(client: redis.Redis) -> None:
    # Given a publisher whose sending thread runs in this process (as after `import actors` in Dramatiq's
    # main process, which then forks its worker processes)
    publisher = EventPublisher(client)
    publisher.publish(TASK, EventType.QUEUED, {"priority": 5})
    assert publisher.flush(5)
    INHERITED["publisher"] = publisher

    # When a forked child publishes through it
    child = multiprocessing.get_context("fork").Process(target=_publish_in_child)
    child.start()
    child.join(30)

    # Then its event arrived
    assert child.exitcode == 0
    assert [event_type for event_type, _ in entries(client)] == ["queued", "running"]
    publisher.close()
