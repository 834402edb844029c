"""``agentq dashboard`` as a process: it serves on loopback, and refuses another interface without a token."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.acceptance.processes import ROOT, command_env, free_port

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]

ADMIN_TOKEN = "process-admin-token-0123456789"


def agentq(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "actors.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_the_dashboard_refuses_another_interface_without_a_token(redis_url: str, tmp_path: Path) -> None:
    env = command_env(REDIS_URL=redis_url, AGENTQ_SQLITE_PATH=str(tmp_path / "agentq.db"))

    result = subprocess.run(
        [sys.executable, "-m", "actors.cli", "dashboard", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 1
    assert "refusing to serve the dashboard on '0.0.0.0' without a token" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_dashboard_serves_the_configured_store_and_wants_its_token(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = command_env(DATABASE_URL=postgres_url, REDIS_URL=redis_url, AGENTQ_DASHBOARD_TOKEN=ADMIN_TOKEN)
    log = tmp_path / "dashboard.log"
    process = agentq("dashboard", "--port", str(port), env=env, log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/api/health", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the dashboard did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        stats = httpx.get(f"{base}/api/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5)
        anonymous = httpx.get(f"{base}/api/stats", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert health.json() == {"status": "ok", "store": "ok", "redis": "ok"}
    assert stats.status_code == 200 and stats.json()["paused"] is False
    assert anonymous.status_code == 401
    assert "server" not in health.headers  # no version banner
    assert ADMIN_TOKEN not in log.read_text()


def test_without_a_token_it_says_it_serves_this_machine_only(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = command_env(REDIS_URL=redis_url, AGENTQ_SQLITE_PATH=str(tmp_path / "agentq.db"))
    log = tmp_path / "dashboard.log"
    process = agentq("dashboard", "--port", str(port), env=env, log=log)
    try:
        deadline = time.monotonic() + 30
        while "for this machine only" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no warning:\n{log.read_text()}")
            time.sleep(0.1)
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert f"Dashboard on http://127.0.0.1:{port} with no token configured, so for this machine only" in (
        log.read_text()
    )
    assert page.status_code == 200 and "No dashboard token is configured" in page.text
