"""A local Sentry ingest: ``POST /api/<project>/envelope/`` (gzip or plain), raw bytes and parsed items kept.

Use :attr:`SentryReceiver.dsn` (``http://key@127.0.0.1:PORT/1``) as ``SENTRY_DSN``; the real
sentry-sdk transport posts envelopes here. :attr:`raw` holds every decompressed body, for
tests that search the bytes that left the process; :meth:`events` the parsed error events.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ["SentryReceiver", "parse_envelope"]


def parse_envelope(body: bytes) -> list[tuple[dict[str, Any], Any]]:
    """The ``(item header, payload)`` pairs of an envelope; JSON payloads decoded."""
    lines = body.split(b"\n")
    items: list[tuple[dict[str, Any], Any]] = []
    index = 1  # line 0 is the envelope header
    while index < len(lines):
        if not lines[index].strip():
            index += 1
            continue
        header = json.loads(lines[index])
        index += 1
        payload_line = lines[index] if index < len(lines) else b""
        index += 1
        try:
            payload: Any = json.loads(payload_line)
        except ValueError:
            payload = payload_line
        items.append((header, payload))
    return items


class SentryReceiver:
    """A threaded HTTP server on 127.0.0.1 accepting Sentry envelopes."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path.rstrip("/").endswith("/envelope"):
                    with receiver._lock:
                        receiver.raw.append(body)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://key@127.0.0.1:{self.server.server_address[1]}/1"

    def items(self, item_type: str) -> list[Any]:
        with self._lock:
            bodies = list(self.raw)
        return [
            payload
            for body in bodies
            for header, payload in parse_envelope(body)
            if header.get("type") == item_type
        ]

    def events(self) -> list[dict[str, Any]]:
        """The error events received (``type: event`` items)."""
        return [event for event in self.items("event") if isinstance(event, dict)]

    def wait_for(self, predicate: Callable[[SentryReceiver], bool], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"Sentry envelopes not received in {timeout_s}s: {len(self.raw)} so far")
            time.sleep(0.05)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
