"""Provider delay headers are read, and cut to a hard maximum so no value can overflow."""

from __future__ import annotations

import pytest

from orchestrator.errors import ProviderRateLimited
from orchestrator.providers._http import MAX_RETRY_AFTER_MS, classify_status, parse_retry_after_ms


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "100000000"},
        {"Retry-After": "1e400"},
        {"retry-after": "inf"},
        {"retry-after-ms": "99999999999999999999"},
        {"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"},
    ],
)
def test_an_absurd_delay_is_cut_to_the_hard_maximum(headers: dict[str, str]) -> None:
    assert parse_retry_after_ms(headers) == MAX_RETRY_AFTER_MS == 24 * 3600 * 1000


@pytest.mark.parametrize("headers", [{"retry-after": "nan"}, {"retry-after": "-3"}, {"retry-after-ms": "-1"}])
def test_nan_and_negative_delays_count_as_absent(headers: dict[str, str]) -> None:
    assert parse_retry_after_ms(headers) is None


def test_a_429_without_retry_after_waits_for_the_longest_rate_limit_reset() -> None:
    headers = {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}
    assert parse_retry_after_ms(headers, resets=True) == 360_000
    assert parse_retry_after_ms({"x-ratelimit-reset-tokens": "1h30m250ms"}, resets=True) == 5_400_250
    assert parse_retry_after_ms({"x-ratelimit-reset-tokens": "99999999h"}, resets=True) == MAX_RETRY_AFTER_MS
    assert parse_retry_after_ms({"x-ratelimit-reset-tokens": "soon"}, resets=True) is None
    assert parse_retry_after_ms(headers) is None  # only a 429 reads them


def test_a_rate_limit_with_an_absurd_retry_after_postpones_by_at_most_the_maximum() -> None:
    error = classify_status("openai", 429, "slow down", {"retry-after": "100000000"})
    assert isinstance(error, ProviderRateLimited)
    assert error.postpone_ms == MAX_RETRY_AFTER_MS
