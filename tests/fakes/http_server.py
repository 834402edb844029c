"""A scriptable JSON HTTP server on 127.0.0.1 (ephemeral port), run in a background thread.

Each POST takes the next scripted :class:`FakeReply` from a queue (a JSON body, a status,
headers and an optional delay) and records the request (path, headers, JSON body). With
the queue empty it answers 500 ``{"error": {"message": "no scripted reply"}}`` so a test
that makes an unexpected call fails loudly. Every wait is bounded; stopping the server
releases handlers still delaying.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ["FakeReply", "FakeServer", "RecordedRequest"]

#: Longest a handler waits in a scripted delay, whatever the script says.
MAX_DELAY_S = 30.0


@dataclass(frozen=True)
class FakeReply:
    """One scripted answer.

    Attributes:
        body: The JSON body.
        status: The HTTP status.
        headers: Extra response headers (e.g. ``retry-after``).
        delay_s: Seconds to wait before answering (bounded by :data:`MAX_DELAY_S`).
    """

    body: Mapping[str, Any]
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


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

    def _next_reply(self) -> FakeReply:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        return FakeReply({"error": {"message": "no scripted reply", "type": "fake_server_error"}}, status=500)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

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
                if reply.delay_s and server._stopping.wait(min(reply.delay_s, MAX_DELAY_S)):
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
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        return Handler
