"""Reaching the real Redis and PostgreSQL the tests use (127.0.0.1 only).

Locally a missing service skips the tests that need it; with ``CI`` set it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import redis

REDIS_URL = os.environ.get("AGENTQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_ADMIN_URL = os.environ.get("AGENTQ_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def unavailable(service: str, exc: BaseException) -> None:
    """Skip on a laptop, fail under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{service} is required under CI but unreachable: {exc}")
    pytest.skip(f"{service} unreachable: {exc}")


def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    return client


@contextmanager
def temporary_database() -> Iterator[str]:
    """A fresh, empty Postgres database for this test session; dropped afterwards."""
    name = f"agentq_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable("PostgreSQL", exc)
        raise
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
