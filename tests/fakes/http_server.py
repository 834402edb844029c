"""A scriptable JSON HTTP server on 127.0.0.1 (ephemeral port), run in a background thread.

Each POST takes the next scripted :class:`FakeReply` from a queue (a JSON body, a status,
headers and an optional delay) and records the request (path, headers, JSON body). With
the queue empty it answers 500 ``{"error": {"message": "no scripted reply"}}`` so a test
that makes an unexpected call fails loudly. Every wait is bounded; stopping the server
releases handlers still delaying.

**Streaming**: a request whose JSON body has ``"stream": true`` gets a successful reply as
Server-Sent Events (``text/event-stream``, chunked), one event per chunk, ``chunk_delay_s``
apart: the reply's own ``sse`` events when it has them, otherwise the events a subclass derives
from its JSON body (:meth:`FakeServer.stream_events`: the provider's own stream of that same
answer). ``cut_after`` ends the connection after that many events, as a stream that breaks off.
Error replies are plain JSON, as the real APIs send them before a stream starts.

**Disconnects**: a client that closes its connection while its reply is delayed (or while a stream is
being written) is noticed within :data:`POLL_S`; the handler gives up and :attr:`FakeServer.disconnects`
counts it (a test of a cancelled or timed-out call can check that the request was really aborted).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ["FakeReply", "FakeServer", "RecordedRequest", "sse_event"]

#: Longest a handler waits in a scripted delay, whatever the script says.
MAX_DELAY_S = 30.0
#: How often a delaying handler checks whether its client hung up.
POLL_S = 0.02


@dataclass(frozen=True)
class FakeReply:
    """One scripted answer.

    Attributes:
        body: The JSON body.
        status: The HTTP status.
        headers: Extra response headers (e.g. ``retry-after``).
        delay_s: Seconds to wait before answering (bounded by :data:`MAX_DELAY_S`).
        sse: For a streaming request: these events (see :func:`sse_event`) instead of the ones
            derived from ``body``.
        chunk_delay_s: For a streaming request: seconds between two events (bounded).
        cut_after: For a streaming request: close the connection after this many events.
    """

    body: Mapping[str, Any]
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    sse: Sequence[bytes] | None = None
    chunk_delay_s: float = 0.0
    cut_after: int | None = None


def sse_event(data: Any, event: str | None = None) -> bytes:
    """One Server-Sent Event: ``event: <event>`` (if given) and ``data: <JSON, or the string as is>``."""
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {text}\n\n".encode()


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received.

    Attributes:
        method: The HTTP method.
        path: The request path.
        headers: The headers, keys lower-cased.
        body: The JSON body (None when not JSON).
        at: When the request arrived (``time.time()``, the clock Redis's ``TIME`` reads too).
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    at: float = 0.0


class _Server(ThreadingHTTPServer):
    """Accepts a deep backlog of connections (hundreds of concurrent clients in the benchmarks)."""

    request_queue_size = 1024


class FakeServer:
    """The server; use as a context manager. ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self) -> None:
        """Create the server (not started)."""
        self.requests: list[RecordedRequest] = []
        self._replies: deque[FakeReply] = deque()
        self._disconnects = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-http", daemon=True
        )

    @property
    def url(self) -> str:
        """The server's root URL, without a trailing slash."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def enqueue(self, *replies: FakeReply) -> None:
        """Add replies to the end of the script."""
        with self._lock:
            self._replies.extend(replies)

    @property
    def disconnects(self) -> int:
        """Requests whose client closed the connection before the whole reply was written."""
        with self._lock:
            return self._disconnects

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._replies)

    def __enter__(self) -> Self:
        """Start serving."""
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop serving; handlers still delaying are released."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def stream_events(self, body: Mapping[str, Any], request: Any) -> list[bytes]:
        """The Server-Sent Events of a streamed answer whose non-streamed JSON is ``body`` (``request``:
        the request's JSON body). Subclasses speak their provider's protocol; this server has none."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream")

    def _next_reply(self) -> FakeReply:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        return FakeReply({"error": {"message": "no scripted reply", "type": "fake_server_error"}}, status=500)

    def _hung_up(self) -> None:
        with self._lock:
            self._disconnects += 1

    def _wait(self, connection: socket.socket, delay_s: float) -> bool:
        """Wait ``delay_s`` (bounded); True when the handler should give up: the server is stopping or
        the client closed the connection (counted in :attr:`disconnects`)."""
        end = time.monotonic() + min(delay_s, MAX_DELAY_S)
        while (left := end - time.monotonic()) > 0:
            if self._stopping.wait(min(POLL_S, left)):
                return True
            if _closed_by_peer(connection):
                self._hung_up()
                return True
        return self._stopping.is_set()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _write_stream(self, handler: BaseHTTPRequestHandler, reply: FakeReply, request: Any) -> None:
        """Answer a streaming request with ``reply`` as Server-Sent Events, one chunk each."""
        events = list(reply.sse) if reply.sse is not None else self.stream_events(reply.body, request)
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("transfer-encoding", "chunked")
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        for index, event in enumerate(events):
            if reply.cut_after is not None and index >= reply.cut_after:
                handler.close_connection = True
                return  # no last chunk: the client sees the stream break off
            if index and reply.chunk_delay_s and self._wait(handler.connection, reply.chunk_delay_s):
                return
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            #: Keep connections alive between requests, as the real APIs do (every reply has a length).
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                arrived = time.time()
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                headers = {key.lower(): value for key, value in self.headers.items()}
                server._record(RecordedRequest("POST", self.path, headers, body, arrived))
                reply = server._next_reply()
                if reply.delay_s and server._wait(self.connection, reply.delay_s):
                    return
                if reply.status == 200 and isinstance(body, dict) and body.get("stream") is True:
                    self._stream(reply, body)
                    return
                payload = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    server._hung_up()

            def _stream(self, reply: FakeReply, request: Any) -> None:
                try:
                    server._write_stream(self, reply, request)
                except (BrokenPipeError, ConnectionResetError):
                    server._hung_up()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        return Handler


def _closed_by_peer(connection: socket.socket) -> bool:
    """Whether the client closed ``connection`` (readable, and reading would give end of file)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # reset, or already closed here
        return True
