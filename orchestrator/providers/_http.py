"""Shared by the SDK-backed providers: SDK errors → ``ProviderError``s, and a client cache.

Both official SDKs raise the same shapes: ``APIStatusError`` (with ``status_code``,
``response.headers`` and the JSON ``body``), ``APITimeoutError`` and
``APIConnectionError``. Classification is by status code:

======================  ==========================  =========
Status / failure        Error                       Retryable
======================  ==========================  =========
429                     ProviderRateLimited         yes, postponed by Retry-After (default 5 s, capped)
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
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

import httpx2

from orchestrator.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderInvalidRequest,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)

__all__ = [
    "MAX_BASE_URLS",
    "MAX_CLIENTS",
    "MAX_RETRY_AFTER_MS",
    "THREADS_PER_CLIENT",
    "ClientCache",
    "StreamDeadline",
    "classify_status",
    "error_message",
    "parse_retry_after_ms",
    "transport_error",
]

#: Longest provider error message kept, in characters.
MAX_ERROR_CHARS = 500

#: Threads that share one SDK client (one HTTP connection pool); see :class:`ClientCache`.
THREADS_PER_CLIENT = 32
#: Most SDK clients per base URL in one process; more threads share them round-robin.
MAX_CLIENTS = 32
#: Most base URLs with SDK clients in one process; the least recently used one is closed beyond.
MAX_BASE_URLS = 32

#: Longest delay a provider's ``retry-after``/``retry-after-ms``/``x-ratelimit-reset-*`` header
#: may ask for, in milliseconds (24 h); longer values are cut to it. The worker's failure policy
#: caps it further by ``AGENTQ_MAX_POSTPONE_MS`` (default 15 minutes).
MAX_RETRY_AFTER_MS = 24 * 3600 * 1000
#: Reset headers read when a 429 carries no ``retry-after`` (OpenAI's; the longest one wins).
RATE_LIMIT_RESET_HEADERS = ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")

ClientT = TypeVar("ClientT")

logger = logging.getLogger("orchestrator")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_MS = {"h": 3_600_000.0, "m": 60_000.0, "s": 1000.0, "ms": 1.0}


def _clamped_ms(value_ms: float) -> int | None:
    """``value_ms`` rounded and cut to :data:`MAX_RETRY_AFTER_MS`; None when negative or not a number."""
    if math.isnan(value_ms) or value_ms < 0:
        return None
    return round(min(value_ms, MAX_RETRY_AFTER_MS))


def _number(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None


def _duration_ms(raw: str) -> float | None:
    """A reset header's value in ms: seconds (``"1.5"``) or a duration (``"6m0s"``, ``"250ms"``)."""
    seconds = _number(raw)
    if seconds is not None:
        return seconds * 1000
    text = raw.strip().lower()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_MS[unit] for number, unit in parts)


def _retry_after_ms(raw: str, now: float | None) -> int | None:
    seconds = _number(raw)
    if seconds is None:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    return _clamped_ms(seconds * 1000)


def parse_retry_after_ms(
    headers: Mapping[str, str], *, now: float | None = None, resets: bool = False
) -> int | None:
    """Return the delay a provider asked for, in milliseconds, at most :data:`MAX_RETRY_AFTER_MS`.

    Read in order: ``retry-after-ms``; ``retry-after`` (seconds, integer or decimal, or an HTTP
    date); then, with ``resets`` (a 429), the longest of :data:`RATE_LIMIT_RESET_HEADERS`
    (seconds or ``"6m0s"``). Negative, unparsable or NaN values count as absent; huge or
    infinite ones are cut to the maximum.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        value = _number(raw_ms)
        if value is not None and (delay := _clamped_ms(value)) is not None:
            return delay
    raw = lowered.get("retry-after")
    if raw is not None:
        return _retry_after_ms(raw, now)
    if not resets:
        return None
    values = [_duration_ms(lowered[name]) for name in RATE_LIMIT_RESET_HEADERS if name in lowered]
    delays = [delay for value in values if value is not None and (delay := _clamped_ms(value)) is not None]
    return max(delays) if delays else None


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
    """Turn an HTTP error answer into the matching :class:`ProviderError` (see the module table),
    carrying the answer's rate-limit headers in ``rate_limits``."""
    from orchestrator.providers.rate_headers import rate_limit_report

    error = _classified(provider, status, message, headers, code)
    error.rate_limits = rate_limit_report(headers)
    return error


def _classified(
    provider: str, status: int, message: str, headers: Mapping[str, str], code: str | None
) -> ProviderError:
    text = f"{provider}: HTTP {status}: {message}"
    if status == 429:
        if code == "insufficient_quota":
            return ProviderQuotaExceeded(f"{text} (out of credit; check billing)", provider=provider)
        return ProviderRateLimited(
            text, retry_after_ms=parse_retry_after_ms(headers, resets=True), provider=provider
        )
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(
            text, provider=provider, status_code=status, retry_after_ms=parse_retry_after_ms(headers)
        )
    if status in (401, 403):
        return ProviderAuthError(f"{text} (check the API key)", provider=provider, status_code=status)
    return ProviderInvalidRequest(text, provider=provider, status_code=status)


class StreamDeadline:
    """The whole-call time limit of a streamed answer.

    An SDK's ``timeout`` bounds each read, so an answer that keeps trickling in could outlast it;
    :meth:`check` after every chunk ends the call once ``timeout_s`` has passed since the request.
    """

    def __init__(self, provider: str, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.provider = provider
        self.timeout_s = timeout_s
        self.clock = clock
        self.deadline = clock() + timeout_s

    def check(self) -> None:
        """Raise :class:`ProviderTimeout` once the deadline has passed."""
        if self.clock() > self.deadline:
            raise self.timed_out()

    def timed_out(self) -> ProviderTimeout:
        """The error of a call that took longer than its timeout."""
        return ProviderTimeout(
            f"{self.provider}: no complete answer within {self.timeout_s:g} s",
            provider=self.provider,
            timeout_s=self.timeout_s,
        )


def transport_error(
    provider: str, exc: httpx2.HTTPError, timeout_s: float, secret: str | None
) -> ProviderError:
    """An HTTP transport failure while a streamed answer was being read (the connection dropped or a read
    timed out), as the matching retryable :class:`ProviderError`."""
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderTimeout(
            f"{provider}: no answer within {timeout_s:g} s", provider=provider, timeout_s=timeout_s
        )
    return ProviderUnavailable(
        f"{provider}: the answer stream broke off: {redact(str(exc) or type(exc).__name__, secret)}",
        provider=provider,
    )


class ClientCache(Generic[ClientT]):
    """SDK clients built lazily, one per base URL and group of threads, safely from many threads.

    A thread is given its group the first time it asks: the first :data:`THREADS_PER_CLIENT`
    threads share client 0, the next ones client 1, and so on, up to :data:`MAX_CLIENTS` per
    base URL (then the groups wrap round). One client for hundreds of threads costs CPU on every
    call: httpx's connection pool walks all of its in-flight requests and connections under one
    lock when a request starts and when its response is closed. With 512 threads on one client a
    call took 2.9-3.4 ms of CPU against 1.9-2.0 ms with groups of 32, and the pool's keep-alive
    limit (100 idle connections) made a fifth of the calls open a new connection when answers
    arrived together (``benchmarks/README.md``, I/O-bound agents). A worker with at most
    :data:`THREADS_PER_CLIENT` threads keeps one client per base URL, as before.

    At most :data:`MAX_BASE_URLS` base URLs keep clients: asking for one more evicts the least
    recently used base URL and closes its clients (a call still running on one may then fail
    as a retryable connection error).

    Args:
        build: Makes a client for a base URL.
        threads_per_client: Threads that share one client.
        max_clients: Most clients per base URL.
        max_base_urls: Most base URLs with clients at once.
    """

    def __init__(
        self,
        build: Callable[[str], ClientT],
        *,
        threads_per_client: int = THREADS_PER_CLIENT,
        max_clients: int = MAX_CLIENTS,
        max_base_urls: int = MAX_BASE_URLS,
    ) -> None:
        """Create the cache; ``build(base_url)`` makes a client."""
        if threads_per_client < 1 or max_clients < 1 or max_base_urls < 1:
            raise ValueError(
                "threads_per_client, max_clients and max_base_urls must be at least 1,"
                f" got {threads_per_client}, {max_clients} and {max_base_urls}"
            )
        self._build = build
        self._threads_per_client = threads_per_client
        self._max_clients = max_clients
        self._max_base_urls = max_base_urls
        self._urls: OrderedDict[str, dict[int, ClientT]] = OrderedDict()
        self._lock = threading.Lock()
        self._threads_seen = 0
        self._local = threading.local()

    def _group(self) -> int:
        group: int | None = getattr(self._local, "group", None)
        if group is None:
            with self._lock:
                seen, self._threads_seen = self._threads_seen, self._threads_seen + 1
            group = (seen // self._threads_per_client) % self._max_clients
            self._local.group = group
        return group

    def get(self, base_url: str) -> ClientT:
        """Return the calling thread's client for ``base_url``, building it on first use."""
        group = self._group()
        evicted: list[ClientT] = []
        with self._lock:
            clients = self._urls.get(base_url)
            if clients is None:
                clients = self._urls[base_url] = {}
                while len(self._urls) > self._max_base_urls:
                    evicted.extend(self._urls.popitem(last=False)[1].values())
            else:
                self._urls.move_to_end(base_url)
            client = clients.get(group)
            if client is None:
                client = clients[group] = self._build(base_url)
        for old in evicted:
            _close(old)
        return client

    def __len__(self) -> int:
        """Return how many clients are held."""
        with self._lock:
            return sum(len(clients) for clients in self._urls.values())


def _close(client: object) -> None:
    """Close an evicted client (its connection pool), if it can be closed."""
    close = getattr(client, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # closing is best effort; the client is dropped either way
            logger.warning("closing an evicted SDK client failed", exc_info=True)
