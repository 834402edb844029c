"""Managed Redis over TLS: a ``rediss://`` URL, or ``REDIS_TLS=true`` with the seed's host and port.

A throwaway ``redis-server`` listens on a TLS port only, with a self-signed certificate made here.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from actors.broker.factory import redis_client
from actors.broker.lanes import LaneBroker
from config.settings import load_settings
from taskstore import InMemoryTaskStore, NewAgent, NewTask, TaskStatus, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import WorkerProcess, command_env, free_port
from tests.harness import ORG, redis_harness, wait_until
from tests.services import unavailable

pytestmark = pytest.mark.integration


@dataclass
class TlsRedis:
    port: int
    ca: Path

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    """``redis-server`` on a TLS-only port with a certificate for 127.0.0.1 (its own CA)."""
    server, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if server is None or openssl is None:
        unavailable("redis-server and openssl", FileNotFoundError("redis-server or openssl not installed"))
    assert server is not None and openssl is not None
    cert, key = tmp_path / "redis.crt", tmp_path / "redis.key"
    subject = ["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            *subject,
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    log = tmp_path / "redis.log"
    files = ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
    process = subprocess.Popen(
        [
            server,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *files,
            "--tls-auth-clients",
            "no",
            "--logfile",
            str(log),
        ],
    )
    try:
        _wait_for_tls(process, port, cert, log)
        yield TlsRedis(port, cert)
    finally:
        process.kill()
        process.wait(timeout=10)


def _wait_for_tls(process: subprocess.Popen[bytes], port: int, ca: Path, log: Path) -> None:
    client = redis.Redis.from_url(f"rediss://127.0.0.1:{port}/0", ssl_ca_certs=str(ca), socket_timeout=2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            client.close()
            return
        except redis.RedisError as exc:
            if process.poll() is not None:  # e.g. a build without TLS refuses --tls-port
                text = log.read_text(errors="replace") if log.exists() else ""
                unavailable("redis-server with TLS", RuntimeError(f"{exc}; log: {text[-500:]}"))
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("query", ["ssl_ca_certs={ca}", "ssl_cert_reqs=none"])
def test_a_task_runs_end_to_end_through_a_rediss_url(tls_redis: TlsRedis, query: str) -> None:
    url = f"{tls_redis.url}?{query.format(ca=tls_redis.ca)}"
    with redis_harness(InMemoryTaskStore(), url, allow_scripted=True) as app:
        task_id = app.task()
        app.queue.add_task(task_id)

        with app.worker():
            wait_until(
                lambda: app.store.get_task(task_id).status == TaskStatus.COMPLETED,  # type: ignore[union-attr]
                what="the task to complete over TLS",
            )

        broker = app.broker
        assert isinstance(broker, LaneBroker)
        assert broker.client.connection_pool.connection_class is redis.SSLConnection


def test_redis_tls_verifies_the_servers_certificate(tls_redis: TlsRedis) -> None:
    """Without the CA, a self-signed server is refused: the connection really is verified TLS."""
    settings = load_settings(
        redis_url=None, redis_tls=True, redis_host="127.0.0.1", redis_port=tls_redis.port
    )
    client = redis_client(settings)

    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        client.ping()
    client.close()


@pytest.mark.acceptance
def test_dramatiq_actors_runs_a_task_over_redis_tls_from_the_seed_variables(
    tls_redis: TlsRedis, postgres_store: PostgresTaskStore, postgres_url: str, tmp_path: Path
) -> None:
    env = command_env(
        DATABASE_URL=postgres_url,
        REDIS_TLS="true",
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(tls_redis.port),
        REDIS_TLS_CA_CERTS=str(tls_redis.ca),
        AGENTQ_ALLOW_SCRIPTED="true",
        QUEUE_CONCURRENCY="2",
    )
    now = utcnow()
    agent = postgres_store.create_agent(
        NewAgent(provider="scripted", model="scripted-1", organization_id=ORG, name="tls"), now=now
    )
    task = postgres_store.create_task(NewTask(agent_id=agent.id, organization_id=ORG, title="tls"), now=now)
    worker = WorkerProcess(env, tmp_path / "worker.log", threads=2)
    try:
        worker.wait_ready()
        producer = WorkerProcess.run_python(
            env, f"from actors import agent_task_queue\nagent_task_queue.add_task({task.id!r}, 5, 0)\n"
        )
        assert producer.returncode == 0, producer.stderr

        wait_until(
            lambda: postgres_store.get_task(task.id).status == TaskStatus.COMPLETED,  # type: ignore[union-attr]
            timeout_s=60,
            interval_s=0.1,
            what="the task to complete under dramatiq actors over TLS",
        )
        assert worker.terminate() == 0
    finally:
        worker.close()
