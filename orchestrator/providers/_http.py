"""Shared by the SDK-backed providers: SDK errors → ``ProviderError``s, and a client cache.

Both official SDKs raise the same shapes: ``APIStatusError`` (with ``status_code``,
``response.headers`` and the JSON ``body``), ``APITimeoutError`` and
``APIConnectionError``. Classification is by status code:

======================  ==========================  =========
Status / failure        Error                       Retryable
======================  ==========================  =========
429                     ProviderRateLimited         yes, postponed by Retry-After (default 5 s)
429 insufficient_quota  ProviderQuotaExceeded       no
408, 409, 5xx           ProviderUnavailable         yes
timeout                 ProviderTimeout             yes
connection error        ProviderUnavailable         yes
401, 403                ProviderAuthError           no
400, 404, 422, 4xx      ProviderInvalidRequest      no
======================  ==========================  =========
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from orchestrator.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderInvalidRequest,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderUnavailable,
)

__all__ = ["ClientCache", "classify_status", "error_message", "parse_retry_after_ms"]

#: Longest provider error message kept, in characters.
MAX_ERROR_CHARS = 500

ClientT = TypeVar("ClientT")


def parse_retry_after_ms(headers: Mapping[str, str], *, now: float | None = None) -> int | None:
    """Return the delay asked for by ``retry-after-ms`` or ``retry-after``, in milliseconds.

    ``retry-after`` may be seconds (integer or decimal) or an HTTP date. Negative or
    unparsable values count as absent.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms)
        except ValueError:
            value = -1
        if value >= 0:
            return round(value)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0, round(seconds * 1000))
    return round(seconds * 1000) if seconds >= 0 else None


def error_message(body: object, fallback: str) -> str:
    """Return the provider's own error message from a JSON error body, else ``fallback``."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return fallback


def error_code(body: object) -> str | None:
    """Return the provider's error code (``code`` or ``type``) from a JSON error body."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            for key in ("code", "type"):
                if isinstance(inner.get(key), str):
                    return str(inner[key])
    return None


def redact(text: str, secret: str | None) -> str:
    """Hide ``secret`` in ``text`` and clip it to :data:`MAX_ERROR_CHARS`."""
    if secret:
        text = text.replace(secret, "***")
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."


def classify_status(
    provider: str, status: int, message: str, headers: Mapping[str, str], code: str | None = None
) -> ProviderError:
    """Turn an HTTP error answer into the matching :class:`ProviderError` (see the module table)."""
    text = f"{provider}: HTTP {status}: {message}"
    if status == 429:
        if code == "insufficient_quota":
            return ProviderQuotaExceeded(f"{text} (out of credit; check billing)", provider=provider)
        return ProviderRateLimited(text, retry_after_ms=parse_retry_after_ms(headers), provider=provider)
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(
            text, provider=provider, status_code=status, retry_after_ms=parse_retry_after_ms(headers)
        )
    if status in (401, 403):
        return ProviderAuthError(f"{text} (check the API key)", provider=provider, status_code=status)
    return ProviderInvalidRequest(text, provider=provider, status_code=status)


class ClientCache(Generic[ClientT]):
    """SDK clients built lazily, once per base URL, safely from many threads."""

    def __init__(self, build: Callable[[str], ClientT]) -> None:
        """Create the cache; ``build(base_url)`` makes a client."""
        self._build = build
        self._clients: dict[str, ClientT] = {}
        self._lock = threading.Lock()

    def get(self, base_url: str) -> ClientT:
        """Return the client for ``base_url``, building it on first use."""
        client = self._clients.get(base_url)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(base_url)
            if client is None:
                client = self._build(base_url)
                self._clients[base_url] = client
            return client

    def __len__(self) -> int:
        """Return how many clients were built."""
        return len(self._clients)
