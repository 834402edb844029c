"""The Sentry scrubber removes configured secrets and secret-shaped strings everywhere in an event."""

from __future__ import annotations

from middleware.sentry import FILTERED, Scrubber, _secrets
from tests.harness import harness_settings


def test_configured_secrets_and_key_shapes_are_filtered_recursively() -> None:
    settings = harness_settings(
        openai_api_key="sk-proj-abcdefghijklmnop",
        redis_url="redis://:hunter2-redis@cache:6379/0",
        database_url="postgresql://app:pg-secret-9@db/app",
    )
    scrubber = Scrubber(_secrets(settings))

    event = scrubber.event(
        {
            "message": "connect redis://:hunter2-redis@cache:6379/0 failed",
            "extra": {"urls": ["postgresql://app:pg-secret-9@db/app"], "key": "sk-proj-abcdefghijklmnop"},
            "breadcrumbs": [{"message": "Authorization: Bearer abcdefghijklmnopqrstu"}],
            "other": "sk-ant-api03-zzzzzzzzzzzz and sk-unknownkey123456",
        },
        None,
    )

    text = repr(event)
    for secret in ("hunter2-redis", "pg-secret-9", "sk-proj-abcdefghijklmnop", "zzzzzzzzzzzz", "unknownkey"):
        assert secret not in text
    assert "abcdefghijklmnopqrstu" not in text
    assert event["message"] == f"connect {FILTERED} failed"
