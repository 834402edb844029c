"""Secrets stay in: one redactor for logs, Sentry events, spans and the errors and tracebacks we store.

:func:`redact` replaces, in any text:

* the secret values this process is configured with (API keys, Supabase keys, the Redis and
  database passwords, the Sentry DSN's key), once :func:`register_settings` has run — at
  start-up (worker boot, the first enqueue, a command's logging set-up), never at import;
* anything shaped like a secret: OpenAI (``sk-…``, ``sk-proj-…``) and Anthropic (``sk-ant-…``)
  keys, Supabase keys (JWT-style ``eyJ….….…`` and ``sb_secret_…``/``sb_publishable_…``), the
  password of any ``scheme://user:password@host`` URL, ``Bearer``/``Basic`` credentials and
  ``api_key``/``apikey``/``password``/``secret``/``token``/``authorization`` key-value pairs,

with :data:`FILTERED`. :func:`redact_data` does the same through dicts and lists (a value
under a secret-named key is filtered whole), :class:`RedactingFilter` to log records.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import traceback
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from config.settings import Settings

FILTERED = "[Filtered]"
#: Configured values shorter than this are not replaced literally (too many false hits).
MIN_SECRET_LENGTH = 4

_KEY_WORDS = r"api[_\-]?key|apikey|password|passwd|secret|token|authorization|auth"
#: ``key=value`` / ``"key": "value"`` pairs whose key names a secret (the costliest pattern to run).
_KEY_VALUE = re.compile(
    rf"""(?ix)(["']?\b[\w\-]*(?:{_KEY_WORDS})["']?\s*[:=]\s*["']?(?:(?:bearer|basic)\s+)?)"""
    r"""(?!\[Filtered\]|(?:bearer|basic)\s)[^\s"'&,;)}\]]+"""
)
#: Whether a text names a secret anywhere: :data:`_KEY_VALUE` can only match a text that does, so it is
#: skipped for the others (most texts; it costs about 0.6 µs per character).
_KEY_WORD = re.compile(rf"(?i){_KEY_WORDS}")
#: What every pattern below needs to match (a key word, ``bearer``/``basic``, ``://``, a key prefix): a
#: text without any is left as it is after the literal secrets, without running the patterns.
_SHAPED = re.compile(rf"(?i:{_KEY_WORDS}|bearer|basic)|://|[srp]k-|sb_|eyJ")
#: ``(pattern, replacement)`` pairs applied in order after the literal secrets.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host → scheme://user:[Filtered]@host (redis://:password@ too)
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@/\s]+@"), rf"\1{FILTERED}@"),
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{4,}"), rf"\1\2{FILTERED}"),
    (_KEY_VALUE, rf"\1{FILTERED}"),
    (re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{8,}"), FILTERED),
    (re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{8,}"), FILTERED),
    (re.compile(r"\bsb_(?:secret|publishable)_[A-Za-z0-9_\-]{8,}"), FILTERED),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}"), FILTERED),
)
_SECRET_KEY = re.compile(rf"(?i)^[\w\-]*(?:{_KEY_WORDS}|cookie)$")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secrets(*values: str | None) -> None:
    """Add literal secret values to replace everywhere (idempotent; short values are ignored)."""
    global _secrets
    with _lock:
        found = set(_secrets) | {value for value in values if value and len(value) >= MIN_SECRET_LENGTH}
        _secrets = tuple(sorted(found, key=len, reverse=True))


def register_settings(settings: Settings) -> None:
    """Register every secret ``settings`` hold: keys, passwords (in URLs too) and the Sentry DSN's key."""
    register_secrets(*secrets_of(settings))


def secrets_of(settings: Settings) -> list[str]:
    """The secret values of ``settings``: API and Supabase keys, Redis/database passwords, DSN key,
    dashboard tokens."""
    plain = [
        settings.openai_api_key,
        settings.anthropic_api_key,
        settings.supabase_service_role_key,
        settings.supabase_secret_key,
        settings.redis_password,
        settings.dashboard_token,
        settings.dashboard_readonly_token,
    ]
    values = [value.get_secret_value() for value in plain if value is not None]
    values.extend(str(token) for token in settings.dashboard_org_tokens.values())
    for url in (settings.redis_url, settings.database_url, settings.sentry_dsn):
        if url is not None:
            values.extend(_url_credentials(url.get_secret_value()))
    return values


def _url_credentials(url: str) -> list[str]:
    """The password of ``url`` (raw and decoded); for a Sentry DSN, its public key (the username)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [parts.password or ""]
    if parts.scheme in ("http", "https"):
        found.append(parts.username or "")
    return [variant for value in found for variant in {value, unquote(value)} if variant]


def redact(text: str) -> str:
    """``text`` with every registered secret and every secret-shaped string replaced by ``[Filtered]``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, FILTERED)
    if _SHAPED.search(text) is None:
        return text
    named = _KEY_WORD.search(text) is not None
    for pattern, replacement in _PATTERNS:
        if pattern is not _KEY_VALUE or named:
            text = pattern.sub(replacement, text)
    return text


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    """Whether ``key`` names a secret (cached: the same few keys come back all the time, and the match
    costs microseconds)."""
    return _SECRET_KEY.match(key) is not None


def redact_data(value: Any) -> Any:
    """``value`` with :func:`redact` applied to every string in it, recursively (dicts, lists, tuples);
    a value under a secret-named key (``api_key``, ``Authorization``, ``password``…) is filtered whole."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            key: FILTERED
            if isinstance(key, str) and _secret_key(key) and isinstance(item, str) and item
            else redact_data(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_data(item) for item in value]
    return value


def describe_error(error: BaseException) -> str:
    """``Type: message`` of ``error``, redacted (span status descriptions)."""
    return f"{type(error).__name__}: {redact(str(error))}"


def redacted_traceback(error: BaseException) -> str:
    """``error``'s formatted traceback, redacted."""
    return redact("".join(traceback.format_exception(error)))


def exception_attributes(error: BaseException) -> dict[str, str | bool]:
    """The OpenTelemetry ``exception`` event's attributes for ``error``, message and stacktrace redacted
    (``span.add_event("exception", …)`` in place of ``span.record_exception``)."""
    return {
        "exception.type": type(error).__qualname__,
        "exception.message": redact(str(error)),
        "exception.stacktrace": redacted_traceback(error),
        "exception.escaped": False,
    }


class RedactingFilter(logging.Filter):
    """A handler filter: redacts a record's message, traceback and stack before any formatter sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def redact_logs(root: logging.Logger | None = None) -> None:
    """Put a :class:`RedactingFilter` on every handler of ``root`` (default: the root logger), once."""
    for handler in (root or logging.getLogger()).handlers:
        if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
            handler.addFilter(RedactingFilter())


def install_redaction(settings: Settings) -> None:
    """Start-up: register ``settings``' secrets and redact the root logger's output."""
    register_settings(settings)
    redact_logs()


__all__ = [
    "FILTERED",
    "RedactingFilter",
    "describe_error",
    "exception_attributes",
    "install_redaction",
    "redact",
    "redact_data",
    "redact_logs",
    "redacted_traceback",
    "register_secrets",
    "register_settings",
    "secrets_of",
]
