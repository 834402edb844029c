"""Connection options of the store and the broker: timeouts, keepalives, TLS; the user's URL wins."""

from __future__ import annotations

import pytest
import redis
from psycopg.conninfo import conninfo_to_dict

from actors.broker.factory import redis_client
from config.errors import ConfigError
from config.settings import load_settings
from taskstore.errors import TaskStoreError
from taskstore.postgres import pool_conninfo, waiter_timeout_s

URL = "postgresql://agentq:s3cret@db.example:5432/agentq"


def test_the_store_adds_keepalives_connect_and_statement_timeouts() -> None:
    params = conninfo_to_dict(pool_conninfo(URL, statement_timeout_ms=30_000))

    assert params["keepalives"] == "1" and params["keepalives_idle"] == "30"
    assert params["keepalives_interval"] == "10" and params["keepalives_count"] == "3"
    assert params["connect_timeout"] == "10"
    assert params["options"] == "-c statement_timeout=30000"
    assert (params["host"], params["user"], params["password"]) == ("db.example", "agentq", "s3cret")


@pytest.mark.parametrize("sslmode", ["disable", "require", "verify-full"])
def test_the_database_urls_sslmode_and_own_timeouts_win(sslmode: str) -> None:
    url = f"{URL}?sslmode={sslmode}&connect_timeout=3&keepalives=0&options=-c%20statement_timeout%3D5"

    params = conninfo_to_dict(pool_conninfo(url, statement_timeout_ms=30_000))

    assert params["sslmode"] == sslmode and params["connect_timeout"] == "3"
    assert params["keepalives"] == "0" and params["options"] == "-c statement_timeout=5"
    assert params["keepalives_idle"] == "30"


def test_the_statement_timeout_joins_the_urls_other_options() -> None:
    params = conninfo_to_dict(pool_conninfo(f"{URL}?options=-c%20search_path%3Dq", statement_timeout_ms=250))

    assert params["options"] == "-c search_path=q -c statement_timeout=250"


def test_a_zero_statement_timeout_adds_no_option() -> None:
    assert "options" not in conninfo_to_dict(pool_conninfo(URL, statement_timeout_ms=0))


def test_a_malformed_database_url_is_named_without_its_password() -> None:
    with pytest.raises(TaskStoreError, match='invalid URI query parameter: "bogus"') as caught:
        pool_conninfo(f"{URL}?bogus=1", statement_timeout_ms=1)

    assert "s3cret" not in str(caught.value)


def test_group_commit_waiters_wait_for_two_bounded_writes() -> None:
    assert waiter_timeout_s(30, 30_000) == 125
    assert waiter_timeout_s(30, 0) == 185  # no statement timeout: the keepalives bound a dead server


def test_the_redis_client_has_timeouts_and_keepalives() -> None:
    client = redis_client(load_settings(redis_url="redis://cache.example:6379/0"))
    options = client.connection_pool.connection_kwargs

    assert options["socket_timeout"] == 30.0 and options["socket_connect_timeout"] == 5
    assert options["socket_keepalive"] is True and options["health_check_interval"] == 30


def test_the_redis_urls_own_options_win() -> None:
    settings = load_settings(
        redis_url="redis://cache.example:6379/0?socket_timeout=7", redis_socket_timeout_s=9
    )

    assert redis_client(settings).connection_pool.connection_kwargs["socket_timeout"] == 7.0


def test_a_socket_timeout_shorter_than_the_blocking_fetch_is_refused() -> None:
    settings = load_settings(redis_url="redis://cache.example:6379/0", redis_socket_timeout_s=0.5)

    with pytest.raises(ConfigError, match=r"AGENTQ_REDIS_SOCKET_TIMEOUT_S=0\.5 must be at least 2"):
        redis_client(settings)


def test_redis_tls_settings_make_a_tls_client_that_verifies_against_the_given_ca() -> None:
    settings = load_settings(
        redis_tls=True, redis_host="cache.example", redis_port=6380, redis_tls_ca_certs="/etc/ca.pem"
    )
    pool = redis_client(settings).connection_pool

    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert (pool.connection_kwargs["host"], pool.connection_kwargs["port"]) == ("cache.example", 6380)
