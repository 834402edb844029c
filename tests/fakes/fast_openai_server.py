"""A fast fake OpenAI Chat Completions server for benchmarks, in its own process.

Every ``POST …/chat/completions`` (``/v1/chat/completions`` with the SDK's ``base_url``
``http://127.0.0.1:PORT/v1``) is answered after a fixed delay with the plain-text completion
of :func:`tests.fakes.openai_server.openai_text`. Unlike :class:`~tests.fakes.openai_server.FakeOpenAIServer`
(threads, scripted replies, recorded requests), it is built to be out of the way: one asyncio
event loop with a minimal HTTP/1.1 parser (keep-alive, ``content-length`` bodies; no chunked
uploads, no pipelining beyond one request at a time per connection) in a child process, so
it does not compete for the caller's GIL. A delay is a timer, not a thread, so thousands of
requests may wait at once.

    with FastOpenAIServer(delay_s=0.2) as server:
        client = openai.OpenAI(api_key="sk-test", base_url=server.base_url)
        ...
        assert server.stats().max_in_flight >= 100

The parent binds 127.0.0.1 on a free port and hands the listening socket to the child, so
the port is known before the child starts; readiness is a bounded poll of ``GET /health``.
``GET /stats`` returns the counters of :class:`ServerStats`. The child stops on SIGTERM or
SIGINT, and by itself when its parent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.fakes.openai_server import openai_text

__all__ = ["FastOpenAIServer", "ServerStats", "main"]

#: Longest wait for the child to answer ``GET /health``.
READY_TIMEOUT_S = 15.0
#: Longest wait for the child to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 5.0
#: Connections waiting to be accepted (hundreds of clients connect at once in the benchmarks).
BACKLOG = 2048
#: Largest request head accepted, in bytes.
MAX_HEAD_BYTES = 65_536
_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ServerStats:
    """The server's counters since it started.

    Attributes:
        requests: Chat Completions answered.
        in_flight: Chat Completions received and not answered yet.
        max_in_flight: The most Chat Completions that were waiting at the same time.
        connections: Connections accepted (health and stats polls included).
    """

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    connections: int = 0


class FastOpenAIServer:
    """Runs the server in a child process; use as a context manager.

    Args:
        delay_s: Seconds before each Chat Completions answer.
        content: The assistant message of every answer.
    """

    def __init__(self, *, delay_s: float = 0.0, content: str = "done") -> None:
        """Create the server (not started)."""
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.delay_s = delay_s
        self.content = content
        self._socket: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, what the OpenAI SDK expects."""
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        """The child process's id."""
        if self._proc is None:
            raise RuntimeError("the server is not running")
        return self._proc.pid

    def __enter__(self) -> Self:
        """Start the child and wait until it answers ``GET /health``."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(BACKLOG)
        self._socket, self._port = sock, sock.getsockname()[1]
        command = [sys.executable, "-m", __name__, "--fd", str(sock.fileno()), "--delay-s", str(self.delay_s)]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])),
        }
        self._proc = subprocess.Popen(
            [*command, "--content", self.content], pass_fds=(sock.fileno(),), env=env
        )
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"the fast fake OpenAI server exited with {self._proc.returncode}")
            try:
                if self._get("/health", timeout=0.5)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the fast fake OpenAI server did not answer within {READY_TIMEOUT_S:g} s")
            time.sleep(0.05)

    def _get(self, path: str, *, timeout: float) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stats(self) -> ServerStats:
        """The server's counters, read from ``GET /stats``."""
        status, body = self._get("/stats", timeout=5.0)
        if status != 200:
            raise RuntimeError(f"GET /stats answered {status}")
        return ServerStats(**json.loads(body))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the child (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`) and close the socket."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
        if self._socket is not None:
            self._socket.close()
            self._socket = None


# --- the child process -------------------------------------------------------------


class _Counters:
    def __init__(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0

    def body(self) -> bytes:
        return json.dumps(asdict(ServerStats(**vars(self)))).encode()


def _response(status: int, reason: str, body: bytes, *, keep_alive: bool) -> bytes:
    close = "" if keep_alive else "connection: close\r\n"
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return f"{head}{close}\r\n".encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One client connection: parse a request, answer it (after the delay), then the next."""

    def __init__(self, counters: _Counters, delay_s: float, content: str) -> None:
        self._counters = counters
        self._delay_s = delay_s
        self._content = content
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._pending: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._counters.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending is not None:  # the client gave up while its answer was delayed
            self._pending.cancel()
            self._pending = None
            self._counters.in_flight -= 1
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._next_request()

    def _next_request(self) -> None:
        if self._pending is not None or self._transport is None:
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._send(431, "Request Header Fields Too Large", b"{}", keep_alive=False)
            return
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        method, target, version = [*lines[0].split(" ", 2), "", ""][:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            self._send(501, "Not Implemented", b'{"error": {"message": "chunked"}}', keep_alive=False)
            return
        length = int(headers.get("content-length") or 0)
        if len(self._buffer) < end + 4 + length:
            return  # the body is still arriving
        del self._buffer[: end + 4 + length]
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        self._dispatch(method, target.split("?", 1)[0], keep_alive)

    def _dispatch(self, method: str, path: str, keep_alive: bool) -> None:
        if method == "POST" and path.endswith("/chat/completions"):
            counters = self._counters
            counters.in_flight += 1
            counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
            loop = asyncio.get_running_loop()
            self._pending = loop.call_later(self._delay_s, self._answer, keep_alive)
        elif method == "GET" and path == "/health":
            self._send(200, "OK", b'{"ok": true}', keep_alive=keep_alive)
        elif method == "GET" and path == "/stats":
            self._send(200, "OK", self._counters.body(), keep_alive=keep_alive)
        else:
            body = json.dumps({"error": {"message": f"no route for {method} {path}", "type": "not_found"}})
            self._send(404, "Not Found", body.encode(), keep_alive=keep_alive)

    def _answer(self, keep_alive: bool) -> None:
        self._pending = None
        self._counters.in_flight -= 1
        self._counters.requests += 1
        body = json.dumps(openai_text(self._content).body).encode()
        self._send(200, "OK", body, keep_alive=keep_alive)

    def _send(self, status: int, reason: str, body: bytes, *, keep_alive: bool) -> None:
        if self._transport is None:
            return
        self._transport.write(_response(status, reason, body, keep_alive=keep_alive))
        if not keep_alive:
            self._transport.close()
            return
        if self._buffer:
            self._next_request()


async def _serve(sock: socket.socket, delay_s: float, content: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    counters = _Counters()
    server = await loop.create_server(
        lambda: _Connection(counters, delay_s, content), sock=sock, backlog=BACKLOG
    )
    parent = os.getppid()
    async with server:
        while not stop.is_set() and os.getppid() == parent:  # stop when the parent dies
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                continue


def main(argv: list[str] | None = None) -> int:
    """Serve on the listening socket passed as ``--fd`` until SIGTERM (the child's entry point)."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.fast_openai_server")
    parser.add_argument(
        "--fd", type=int, required=True, help="a listening TCP socket inherited from the parent"
    )
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--content", default="done")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    asyncio.run(_serve(sock, args.delay_s, args.content))
    return 0


if __name__ == "__main__":
    sys.exit(main())
