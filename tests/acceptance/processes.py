"""Real worker processes and throwaway servers for the acceptance tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]


def command_env(**values: str) -> dict[str, str]:
    """The test process's environment without our settings, plus ``values``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AGENTQ_", "DATABASE_", "REDIS_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(values)
    return env


class WorkerProcess:
    """``dramatiq actors`` in its own process group, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *, threads: int = 4) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "actors", "--processes", "1", "--threads", str(threads)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @staticmethod
    def run_python(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
        """Run ``code`` in a fresh interpreter from the repository root (a producer process)."""
        return subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while "Worker process is ready for action." not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start:\n{self.log()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the whole process group: the worker dies mid-task, as on an OOM kill or a lost machine."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM, as an orchestrator stopping the container does; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout_s)
        self._log.close()
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        if not self._log.closed:
            self._log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayRedis:
    """A private ``redis-server`` without persistence, which a test may kill and restart."""

    def __init__(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed")
        self.server = server
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        """Lose everything, as a restart without persistence does."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
