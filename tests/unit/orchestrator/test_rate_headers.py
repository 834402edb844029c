"""Both providers' rate-limit headers are read; a value that is not a number is ignored with one warning."""

from __future__ import annotations

import logging

import pytest

from orchestrator.errors import ProviderRateLimited
from orchestrator.messages import RateLimitReport
from orchestrator.providers import rate_headers
from orchestrator.providers._http import classify_status
from orchestrator.providers.rate_headers import rate_limit_report

NOW = 1_800_000_000.0


@pytest.fixture(autouse=True)
def fresh_warnings() -> None:
    rate_headers._warned.clear()


def test_openai_headers() -> None:
    headers = {
        "X-RateLimit-Limit-Requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6m0s",
    }

    assert rate_limit_report(headers) == RateLimitReport(499, 120, 149_984, 360_000)


def test_anthropic_headers_with_reset_times() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:03Z",
        "anthropic-ratelimit-tokens-remaining": "900",
        "anthropic-ratelimit-tokens-reset": "2027-01-15T08:00:10+00:00",
    }
    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z

    assert rate_limit_report(headers, now=now) == RateLimitReport(0, 3000, 900, 10_000)


def test_anthropic_input_and_output_token_limits_give_the_lower_remaining() -> None:
    headers = {
        "anthropic-ratelimit-input-tokens-remaining": "5000",
        "anthropic-ratelimit-input-tokens-reset": "2027-01-15T08:00:30Z",
        "anthropic-ratelimit-output-tokens-remaining": "700",
        "anthropic-ratelimit-output-tokens-reset": "2027-01-15T08:00:05Z",
    }

    report = rate_limit_report(headers, now=1_800_000_000.0)

    assert report == RateLimitReport(None, None, 700, 5000)


def test_no_rate_limit_headers_no_report() -> None:
    assert rate_limit_report({"content-type": "application/json"}) is None
    assert rate_limit_report({"x-ratelimit-limit-requests": "500"}) is None  # limits alone say nothing now


def test_a_reset_in_the_past_is_now() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "3",
        "anthropic-ratelimit-requests-reset": "2000-01-01T00:00:00Z",
    }
    assert rate_limit_report(headers, now=NOW) == RateLimitReport(3, 0, None, None)


def test_a_header_that_is_not_a_number_is_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    headers = {
        "x-ratelimit-remaining-requests": "plenty",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "soon",
    }

    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        first = rate_limit_report(headers)
        second = rate_limit_report(headers)

    assert first == second == RateLimitReport(None, 1000, 100, None)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2, warnings  # one per bad header name, never repeated
    assert any("x-ratelimit-remaining-requests='plenty' is not a number" in text for text in warnings)
    assert any("x-ratelimit-reset-tokens='soon'" in text for text in warnings)


@pytest.mark.parametrize("value", ["-1", "nan", ""])
def test_negative_or_empty_remaining_is_ignored(value: str) -> None:
    report = rate_limit_report({"x-ratelimit-remaining-requests": value, "x-ratelimit-reset-requests": "1s"})
    assert report == RateLimitReport(None, 1000, None, None)


def test_a_429_carries_the_headers_it_came_with() -> None:
    error = classify_status(
        "openai",
        429,
        "slow down",
        {"retry-after": "3", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "3s"},
    )

    assert isinstance(error, ProviderRateLimited)
    assert error.postpone_ms == 3000 and error.postpone_cause == "provider_429"
    assert error.rate_limits == RateLimitReport(0, 3000, None, None)
