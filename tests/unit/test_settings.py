"""Settings: defaults from the seed, and bad values named with their variable."""

from __future__ import annotations

import pytest

from config.errors import ConfigError
from config.settings import load_settings


def test_defaults_match_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_PASSWORD",
        "QUEUE_CONCURRENCY",
        "DATABASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)

    settings = load_settings()

    assert settings.redis_connection_url() == "redis://localhost:6379/0"
    assert settings.queue_concurrency == 5 and settings.max_attempts == 3 and settings.backoff_ms == 2000
    assert (settings.keep_completed_age_s, settings.keep_completed_count) == (86_400, 1000)
    assert (settings.keep_failed_age_s, settings.keep_failed_count) == (604_800, 5000)
    assert settings.store_backend() == "sqlite"


def test_redis_url_wins_and_passwords_are_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "cache.internal")
    monkeypatch.setenv("REDIS_PASSWORD", "p@ss:word")
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert load_settings().redis_connection_url() == "redis://:p%40ss%3Aword@cache.internal:6379/0"

    monkeypatch.setenv("REDIS_URL", "rediss://secure.example:6380/2")
    assert load_settings().redis_connection_url() == "rediss://secure.example:6380/2"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REDIS_PORT", "abc", "REDIS_PORT='abc' is not a port number"),
        ("REDIS_PORT", "70000", "REDIS_PORT='70000' is not a port number"),
        ("QUEUE_CONCURRENCY", "0", "QUEUE_CONCURRENCY='0' must be at least 1"),
        ("AGENTQ_MAX_ATTEMPTS", "three", "AGENTQ_MAX_ATTEMPTS='three' is not an integer"),
        ("AGENTQ_BACKOFF_MS", "-5", "AGENTQ_BACKOFF_MS='-5' must not be negative"),
        ("AGENTQ_LOG_LEVEL", "chatty", "AGENTQ_LOG_LEVEL='chatty' is not a log level"),
        ("REDIS_URL", "http://x", "REDIS_URL=<hidden> is not a redis://"),
    ],
)
def test_a_bad_value_names_the_variable_and_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert message in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_secrets_never_appear_in_errors_or_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://user:hunter2@db/app")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)

    monkeypatch.setenv("DATABASE_URL", "postgresql://user:hunter2@db/app")
    monkeypatch.setenv("REDIS_PASSWORD", "hunter3")
    settings = load_settings()
    assert "hunter2" not in repr(settings) and "hunter3" not in repr(settings)
    assert settings.store_backend() == "postgres"


def test_extra_middleware_is_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTQ_MIDDLEWARE", "pkg.mod:One, pkg.other.Two")
    assert load_settings().extra_middleware == ("pkg.mod:One", "pkg.other.Two")


def test_the_postgres_pool_follows_threads_up_to_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_CONCURRENCY", "8")
    assert load_settings().db_pool_max() == 12
    monkeypatch.setenv("QUEUE_CONCURRENCY", "512")
    assert load_settings().db_pool_max() == 32  # never past the server's max_connections on its own
    monkeypatch.setenv("AGENTQ_DB_POOL_SIZE", "80")
    assert load_settings().db_pool_max() == 80


def test_group_commit_is_on_unless_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().db_group_commit is True
    monkeypatch.setenv("AGENTQ_DB_GROUP_COMMIT", "false")
    assert load_settings().db_group_commit is False


def test_redis_tls_builds_a_rediss_url_from_the_seed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_TLS_CA_CERTS", raising=False)
    monkeypatch.setenv("REDIS_TLS", "true")
    monkeypatch.setenv("REDIS_HOST", "cache.example")
    monkeypatch.setenv("REDIS_PORT", "6380")
    monkeypatch.setenv("REDIS_PASSWORD", "p@ss")
    assert load_settings().redis_connection_url() == "rediss://:p%40ss@cache.example:6380/0"

    monkeypatch.setenv("REDIS_TLS_CA_CERTS", "/etc/my certs/ca.pem")
    url = load_settings().redis_connection_url()
    assert url == "rediss://:p%40ss@cache.example:6380/0?ssl_ca_certs=/etc/my%20certs/ca.pem"

    monkeypatch.setenv("REDIS_URL", "redis://plain.example:6379/1")
    assert load_settings().redis_connection_url() == "redis://plain.example:6379/1"


def test_redis_tls_off_keeps_a_plain_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "REDIS_PASSWORD", "REDIS_TLS_CA_CERTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_TLS", "false")
    monkeypatch.setenv("REDIS_HOST", "cache.example")
    assert load_settings().redis_connection_url() == "redis://cache.example:6379/0"
