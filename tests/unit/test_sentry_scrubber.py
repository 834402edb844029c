"""The Sentry scrubber removes configured secrets and secret-shaped strings everywhere in an event."""

from __future__ import annotations

import pytest

from config import redaction
from config.redaction import FILTERED, register_settings
from middleware.sentry import Scrubber
from tests.harness import harness_settings

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlLXNpZw"


def test_configured_secrets_and_key_shapes_are_filtered_recursively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redaction, "_secrets", ())
    register_settings(
        harness_settings(
            openai_api_key="sk-proj-abcdefghijklmnop",
            redis_url="redis://:hunter2-redis@cache:6379/0",
            database_url="postgresql://app:pg-secret-9@db/app",
            supabase_secret_key="plain-configured-supabase-value",
            sentry_dsn="https://publickey1234@o1.ingest.example/42",
        )
    )

    event = Scrubber().event(
        {
            "message": "connect redis://:hunter2-redis@cache:6379/0 failed",
            "extra": {"urls": ["postgresql://app:pg-secret-9@db/app"], "key": "sk-proj-abcdefghijklmnop"},
            "breadcrumbs": [{"message": "Authorization: Bearer abcdefghijklmnopqrstu"}],
            "other": "sk-ant-api03-zzzzzzzzzzzz and sk-unknownkey123456",
            "exception": {"values": [{"value": f"401 for sb_secret_AbCdEf123456 and {JWT}"}]},
            "contexts": {"agentq": {"attempts": [{"error": "password=pw-in-pair token=tk-in-pair"}]}},
            "request": {"headers": {"apikey": "anything-at-all", "Authorization": "opaque"}},
            "tags": [["note", "plain-configured-supabase-value and publickey1234"]],
            "logentry": {
                "message": "rediss://default:other-pass@managed:6380 apikey: sb_publishable_AbCdEf123"
            },
        },
        None,
    )

    text = repr(event)
    for secret in (
        "hunter2-redis",
        "pg-secret-9",
        "sk-proj-abcdefghijklmnop",
        "zzzzzzzzzzzz",
        "unknownkey",
        "abcdefghijklmnopqrstu",
        "sb_secret_AbCdEf123456",
        JWT[:20],
        "pw-in-pair",
        "tk-in-pair",
        "anything-at-all",
        "opaque",
        "plain-configured-supabase-value",
        "publickey1234",
        "other-pass",
        "sb_publishable_AbCdEf123",
    ):
        assert secret not in text, secret
    # The URL stays readable: only its password goes
    assert event["message"] == f"connect redis://:{FILTERED}@cache:6379/0 failed"


def test_breadcrumbs_are_scrubbed_too() -> None:
    crumb = Scrubber().breadcrumb({"message": "GET https://u:crumb-pass@api.example/x", "data": {}}, None)

    assert "crumb-pass" not in repr(crumb)
