"""A provider's rate-limit response headers as a :class:`~orchestrator.messages.RateLimitReport`.

Read on every answer, success or error, from both providers:

=========================================  ==========================================================
OpenAI                                     Anthropic
=========================================  ==========================================================
``x-ratelimit-remaining-requests``         ``anthropic-ratelimit-requests-remaining``
``x-ratelimit-reset-requests`` (``"1s"``,  ``anthropic-ratelimit-requests-reset`` (an RFC 3339 time)
``"6m0s"``, ``"20ms"``)
``x-ratelimit-remaining-tokens``           ``anthropic-ratelimit-tokens-remaining`` (else the lower of
                                           ``…-input-tokens-…`` and ``…-output-tokens-…``)
``x-ratelimit-reset-tokens``               ``anthropic-ratelimit-tokens-reset``
=========================================  ==========================================================

A value that is not a number (or a time, for a reset) is ignored, with one warning per header name
per process: the provider's other headers still count, and the call is unaffected.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from datetime import datetime

from config.errors import short_repr
from orchestrator.messages import RateLimitReport
from orchestrator.providers._http import MAX_RETRY_AFTER_MS, _duration_ms

__all__ = ["rate_limit_report"]

logger = logging.getLogger("orchestrator")

#: (remaining, reset) header pairs for requests, first present wins.
_REQUEST_HEADERS = (
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"),
)
#: (remaining, reset) header pairs for tokens; the lowest remaining present wins.
_TOKEN_HEADERS = (
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    ("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"),
    ("anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset"),
    ("anthropic-ratelimit-output-tokens-remaining", "anthropic-ratelimit-output-tokens-reset"),
)

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _ignore(name: str, raw: str) -> None:
    """Warn once per process that header ``name`` is unusable."""
    with _warned_lock:
        if name in _warned:
            return
        _warned.add(name)
    logger.warning(
        "provider header %s=%s is not a number; ignored (this warning is not repeated)", name, short_repr(raw)
    )


def _remaining(name: str, raw: str) -> int | None:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        _ignore(name, raw)
        return None
    return int(min(value, 2**53))


def _reset_ms(name: str, raw: str, now: float) -> int | None:
    value = _duration_ms(raw)
    if value is None:
        try:
            value = (datetime.fromisoformat(raw.strip()).timestamp() - now) * 1000
        except ValueError:
            value = math.nan
        if not math.isnan(value):
            value = max(value, 0.0)
    if math.isnan(value) or value < 0:
        _ignore(name, raw)
        return None
    return round(min(value, MAX_RETRY_AFTER_MS))


def _pair(
    headers: Mapping[str, str], remaining: str, reset: str, now: float
) -> tuple[int | None, int | None] | None:
    if remaining not in headers and reset not in headers:
        return None
    left = _remaining(remaining, headers[remaining]) if remaining in headers else None
    until = _reset_ms(reset, headers[reset], now) if reset in headers else None
    return left, until


def rate_limit_report(headers: Mapping[str, str], *, now: float | None = None) -> RateLimitReport | None:
    """The rate-limit headers in ``headers`` (any case), or None when there are none.

    ``now`` (seconds since the epoch) turns Anthropic's reset times into delays; default: the clock.
    """
    lowered = {key.lower(): value for key, value in headers.items() if "ratelimit" in key.lower()}
    if not lowered:
        return None
    moment = time.time() if now is None else now
    requests = next(
        (pair for names in _REQUEST_HEADERS if (pair := _pair(lowered, *names, moment)) is not None), None
    )
    tokens = [pair for names in _TOKEN_HEADERS if (pair := _pair(lowered, *names, moment)) is not None]
    known = [pair for pair in tokens if pair[0] is not None]
    token_pair = min(known, key=lambda pair: pair[0] or 0) if known else (tokens[0] if tokens else None)
    if requests is None and token_pair is None:
        return None
    return RateLimitReport(
        requests_remaining=requests[0] if requests else None,
        requests_reset_ms=requests[1] if requests else None,
        tokens_remaining=token_pair[0] if token_pair else None,
        tokens_reset_ms=token_pair[1] if token_pair else None,
    )
